"""Never pay twice: one idempotency key is one fal job, across threads, processes, crashes and stores.

FakeFal counts the submissions it accepted; every case asserts exactly one per key.
The shared stores are the real SQLite file, PostgreSQL and Redis servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falwrap import FalClient, FalConfig, InvalidInputError, ModelError, RateLimitConfig, set_testing
from falwrap.testing import FakeFal, Fault, JobFailure
from tests.contract.stores import fresh_store

SCHNELL = "fal-ai/flux/schnell"
ROOT = Path(__file__).resolve().parent.parent
SHARED = ("sqlite", "postgresql", "redis")


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with set_testing(True), FakeFal() as emulator:
        yield emulator


@pytest.fixture(params=SHARED)
def store_url(request: pytest.FixtureRequest, tmp_path: Path, fal: FakeFal) -> Iterator[str]:
    """A shared store of each kind; the API key's fingerprint keeps this test's rows apart."""
    with fresh_store(request.param, tmp_path) as factory:
        url = factory.url
        yield url
        if request.param != "sqlite":
            from falwrap.backends import wipe_namespace

            wipe_namespace(url, FalConfig(api_key=fal.key).key_fingerprint)


def _config(fal: FakeFal, store_url: str = "memory:") -> FalConfig:
    return FalConfig(
        api_key=fal.key, base_url=fal.url, store_url=store_url,
        rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100),
    )  # fmt: skip


def _threads(n: int, work: Callable[[int], None]) -> None:
    pool = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def test_a_key_from_eight_threads_makes_one_job(fal: FakeFal) -> None:
    """Eight threads, one key: one submission; every caller gets the same request id and images."""
    fal.set_latency(0.3, SCHNELL)
    results: list[Any] = [None] * 8
    with FalClient(_config(fal)) as c:

        def work(i: int) -> None:
            results[i] = c.image("a cat", model=SCHNELL, idempotency_key="order-42")

        _threads(8, work)
        assert fal.submissions == 1
        assert len({r.request_id for r in results}) == 1
        assert len({tuple(i.url for i in r.images) for r in results}) == 1
        assert c.daily_cost() == fal.billed_total == Decimal("0.003")


def test_a_key_reused_for_other_arguments_is_refused_without_any_http(fal: FakeFal) -> None:
    """The same key with another prompt: InvalidInputError naming idempotency_key, nothing sent."""
    with FalClient(_config(fal)) as c:
        c.image("a cat", model=SCHNELL, idempotency_key="k")
        before = dict(fal.counters)
        with pytest.raises(InvalidInputError) as info:
            c.image("a dog", model=SCHNELL, idempotency_key="k")
        assert info.value.field == "idempotency_key"
        assert dict(fal.counters) == before
        # The same key on another endpoint is another key (hashed with the endpoint).
        c.image("a dog", model="fal-ai/flux/dev", idempotency_key="k")
        assert fal.submissions == 2


def test_a_finished_key_returns_the_stored_result_without_http(fal: FakeFal) -> None:
    """The job finished: a repeat call reads the journal, no request reaches fal's queue."""
    with FalClient(_config(fal)) as c:
        first = c.image("a cat", model=SCHNELL, idempotency_key="done")
        before = sum(fal.counters.values())
        again = c.image("a cat", model=SCHNELL, idempotency_key="done")
        assert sum(fal.counters.values()) == before
        assert again.request_id == first.request_id
        assert again.images == first.images
        assert again.cost_usd == first.cost_usd


def test_a_failed_key_raises_its_stored_error(fal: FakeFal) -> None:
    """The keyed job failed: a repeat call raises the same error, and nothing is sent again."""
    fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
    with FalClient(_config(fal)) as c:
        with pytest.raises(ModelError):
            c.image("a cat", model=SCHNELL, idempotency_key="bad")
        with pytest.raises(ModelError) as info:
            c.image("a cat", model=SCHNELL, idempotency_key="bad")
        assert info.value.error_code == "content_policy_violation"
        assert fal.submissions == 1


def test_bad_keys_are_refused_before_any_http(fal: FakeFal) -> None:
    """An empty, huge or unencodable key is InvalidInputError naming idempotency_key."""
    with FalClient(_config(fal)) as c:
        for bad in ("", "x" * 300, "a \ud800 b"):
            with pytest.raises(InvalidInputError) as info:
                c.image("a cat", model=SCHNELL, idempotency_key=bad)
            assert info.value.field == "idempotency_key"
        assert sum(fal.counters.values()) == 0


def _env(fal: FakeFal, store_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FALWRAP_"))}
    return {
        **keep, "FAL_KEY": fal.key, "FAL_BASE_URL": fal.url, "FALWRAP_STORE_URL": store_url,
        "FAL_REQUESTS_PER_MINUTE": "600000", "FAL_RATE_BURST": "100", "PYTHONPATH": str(ROOT),
    }  # fmt: skip


def _spawn(fal: FakeFal, store_url: str, key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.keyed_call", key, "a cat"],
        env=_env(fal, store_url), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _outcome(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=90)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no outcome (exit {proc.returncode}): {err[-2000:]}"
    outcome: dict[str, Any] = json.loads(lines[-1])
    return outcome


def test_a_key_from_four_processes_makes_one_job(fal: FakeFal, store_url: str) -> None:
    """Four processes sharing a store, one key: one submission, one request id for all."""
    fal.set_latency(0.5, SCHNELL)
    procs = [_spawn(fal, store_url, "shared-key") for _ in range(4)]
    outcomes = [_outcome(p) for p in procs]
    assert all("request_id" in o for o in outcomes), outcomes
    assert len({o["request_id"] for o in outcomes}) == 1
    assert fal.submissions == 1


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


PHASES = ("submitting", "running", "completed")


@pytest.mark.parametrize("phase", PHASES)
def test_a_process_killed_mid_call_is_finished_by_the_next_with_the_key(
    fal: FakeFal, tmp_path: Path, phase: str
) -> None:
    """SIGKILL while submitting (answer in flight), while running, after completion: the same call with
    the same key in a new process completes it, with no second submission."""
    store_url = f"sqlite:///{tmp_path / 'journal.db'}"
    if phase == "submitting":
        # fal accepts the job, then the answer hangs: the child is killed waiting for it.
        fal.inject("submit", Fault.after(Fault.stall(30, then="respond")))
    elif phase == "running":
        fal.set_latency(1.5, SCHNELL)
    else:
        fal.inject("result", Fault.stall(30, then="respond"))
        fal.inject("stream", Fault.stall(30, then="respond"))
    child = _spawn(fal, store_url, "crash-key")
    try:
        if phase == "submitting":
            _wait_for(lambda: fal.submissions == 1, "fal to accept the job")
        elif phase == "running":
            _wait_for(lambda: any(v.state == "IN_PROGRESS" for v in fal.jobs.values()), "the job to run")
        else:
            _wait_for(lambda: any(v.state == "COMPLETED" for v in fal.jobs.values()), "the job to complete")
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    fal.clear_faults()
    outcome = _outcome(_spawn(fal, store_url, "crash-key"))
    assert "request_id" in outcome, outcome
    assert outcome["request_id"] in fal.jobs
    assert fal.submissions == 1
    with FalClient(_config(fal, store_url)) as c:
        assert c.daily_cost() == fal.billed_total


def test_a_process_killed_before_its_submission_arrived_is_submitted_once_by_the_next(
    fal: FakeFal, tmp_path: Path
) -> None:
    """SIGKILL while the submission had not reached fal: the same call with the key in a new process takes the
    job over, finds nothing in fal's request list, and submits it once (it used to wait out its deadline)."""
    store_url = f"sqlite:///{tmp_path / 'journal.db'}"
    fal.inject("submit", Fault.stall(30, then="close"))
    child = _spawn(fal, store_url, "lost-key")
    try:
        _wait_for(lambda: fal.counters["submit"] >= 1, "the submission to reach FakeFal")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    fal.clear_faults()
    assert fal.submissions == 0
    started = time.monotonic()
    outcome = _outcome(_spawn(fal, store_url, "lost-key"))
    assert "request_id" in outcome, outcome
    assert time.monotonic() - started < 30  # well within the call's 60 s deadline
    assert fal.submissions == 1
    with FalClient(_config(fal, store_url)) as c:
        assert c.daily_cost() == fal.billed_total
