"""One retry loop for every phase: each phase's retries reach the hooks, and testing mode skips every sleep.

Every case sets a 30 s backoff: a call that waited out even one retry would take
30 s. Under ``set_testing(True)`` each finishes in well under that, so no sleep
happened, and the hooks saw the phase.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from falwrap import FalClient, FalConfig, RateLimitConfig, RetryConfig, RetryDetails, set_testing
from falwrap.testing import FakeFal, Fault, JobFailure
from tests.helpers.cli import clean_env

MODEL = "fal-ai/flux/schnell"
SLOW_BACKOFF = RetryConfig(max_retries=3, base_delay=30.0, max_delay=30.0, jitter=False)


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal() as emulator:
        yield emulator


def _client(fal: FakeFal, seen: list[RetryDetails], **overrides: object) -> FalClient:
    config = FalConfig(
        api_key=fal.key, base_url=fal.url, retry=SLOW_BACKOFF,
        rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100), **overrides,  # type: ignore[arg-type]
    )  # fmt: skip
    return FalClient(config, on_retry=seen.append)


def _submit(fal: FakeFal, c: FalClient) -> None:
    fal.inject("submit", Fault.http(503))
    c.image("a cat", model=MODEL)


def _resubmit(fal: FakeFal, c: FalClient) -> None:
    fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503, retryable=True))
    c.image("a cat", model=MODEL)


def _status(fal: FakeFal, c: FalClient) -> None:
    fal.inject("status", Fault.nginx(502))
    c.image("a cat", model=MODEL)


def _result(fal: FakeFal, c: FalClient) -> None:
    fal.inject("result", Fault.http(503))
    c.image("a cat", model=MODEL)


def _cancel(fal: FakeFal, c: FalClient) -> None:
    fal.set_latency(5.0, MODEL)
    handle = c.submit(MODEL, {"prompt": "a cat"})
    fal.inject("cancel", Fault.http(503))
    assert c.cancel(handle)


def _upload(fal: FakeFal, c: FalClient) -> None:
    # Storage v3's token fails (the upload falls back to the legacy storage, no retry), then the legacy initiate.
    fal.inject("upload", Fault.http(503), times=2)
    assert c.upload(b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png", "a.png").startswith("http")


def _download(fal: FakeFal, c: FalClient, tmp: Path) -> None:
    result = c.image("a cat", model=MODEL)
    fal.inject("file", Fault.http(503))
    (path,) = result.save(tmp)
    assert path.stat().st_size > 0


PHASES: dict[str, Callable[..., None]] = {
    "submit": _submit,
    "resubmit": _resubmit,
    "status": _status,
    "result": _result,
    "cancel": _cancel,
    "upload": _upload,
    "download": _download,
}


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_every_phase_retries_through_the_hooks_without_sleeping_in_testing_mode(
    fal: FakeFal, phase: str, tmp_path: Path
) -> None:
    """A fault in the phase is retried once, told to the hook with the phase's name, and not slept."""
    seen: list[RetryDetails] = []
    overrides = {"status_stream": False} if phase == "status" else {}
    with set_testing(True), _client(fal, seen, **overrides) as c:
        started = time.monotonic()
        if phase == "download":
            _download(fal, c, tmp_path)
        else:
            PHASES[phase](fal, c)
        elapsed = time.monotonic() - started
    assert [d.phase for d in seen] == [phase]
    assert seen[0].delay == pytest.approx(30.0)
    assert elapsed < 10.0, f"{phase}: {elapsed:.1f} s means a 30 s backoff was slept"


def test_polling_does_not_sleep_in_testing_mode(fal: FakeFal) -> None:
    """With a 2 s polling interval, a 0.5 s job is still polled many times: the interval was not slept."""
    fal.set_latency(0.5, MODEL)
    config = FalConfig(api_key=fal.key, base_url=fal.url, status_stream=False, poll_interval=2.0)
    with set_testing(True), FalClient(config) as c:
        started = time.monotonic()
        c.image("a cat", model=MODEL)
        elapsed = time.monotonic() - started
    assert fal.counters["status"] > 3
    assert elapsed < 2.0


def test_outside_testing_mode_the_backoff_is_slept(fal: FakeFal) -> None:
    """The same fault without testing mode waits the policy's delay (0.3 s here) before the retry."""
    seen: list[RetryDetails] = []
    config = FalConfig(
        api_key=fal.key, base_url=fal.url, retry=RetryConfig(max_retries=1, base_delay=0.3, max_delay=0.3, jitter=False)
    )
    fal.inject("submit", Fault.http(503))
    with FalClient(config, on_retry=seen.append) as c:
        started = time.monotonic()
        c.image("a cat", model=MODEL)
        elapsed = time.monotonic() - started
    assert [d.phase for d in seen] == ["submit"]
    assert elapsed >= 0.3


_SCRIPT = """
import logging, sys
from falwrap import FalClient, set_testing
if sys.argv[1] == "configured":
    logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
set_testing(True)
with FalClient() as client:
    client.image("a cat", model="fal-ai/flux/schnell")
"""


@pytest.mark.parametrize("logging_set_up", [False, True], ids=["app-without-logging", "app-with-logging"])
def test_retry_warnings_reach_the_apps_logging_and_nothing_else(
    fal: FakeFal, tmp_path: Path, logging_set_up: bool
) -> None:
    """A library adds only a NullHandler: a script that never set up logging gets no stray stderr lines from
    Python's last-resort handler; one that did sees the retry WARNING on the ``falwrap`` logger."""
    fal.inject("submit", Fault.http(503))
    argv = [sys.executable, "-c", _SCRIPT, "configured" if logging_set_up else "bare"]
    env = clean_env(FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FALWRAP_STORE_URL="memory:", XDG_DATA_HOME=str(tmp_path))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert fal.counters["submit"] == 2
    if logging_set_up:
        assert "WARNING falwrap [falwrap] retrying submit fal-ai/flux/schnell (attempt 2)" in done.stderr
    else:
        assert done.stderr == ""
