"""Following a job on the status stream: a stream cut mid-job resumes the same request, never resubmits.

The rest of the stream fault matrix (never opens, 503, reset, stall,
malformed) is in test_faults.py; these cases need ``Fault.cut_after``: the
stream delivers some events, then its connection drops before COMPLETED.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from falwrap import FalClient, FalConfig, FalTimeoutError, Progress, RateLimitConfig, RetryConfig, Timeouts
from falwrap.testing import FakeFal, Fault

MODEL = "fal-ai/flux/schnell"
JOB_SECONDS = 0.6
DEADLINE = 6.0


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=JOB_SECONDS) as emulator:
        yield emulator


def _client(fal: FakeFal, timeout: float = DEADLINE) -> FalClient:
    config = FalConfig(
        api_key=fal.key,
        base_url=fal.url,
        timeouts=Timeouts(image=timeout, queue_status=1.0),
        retry=RetryConfig(max_retries=2, base_delay=0.05, max_delay=0.2, jitter=False),
        rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100),
        status_stream=True,
    )
    return FalClient(config)


@pytest.mark.parametrize("events", [0, 1, 2], ids=["after-headers", "after-in-progress", "after-a-log-line"])
def test_stream_cut_mid_job_resumes_the_same_request(fal: FakeFal, events: int) -> None:
    """The stream drops before COMPLETED: the client follows the same request id to its result, one submission."""
    fal.inject("stream", Fault.cut_after(events))
    progress: list[Progress] = []
    with _client(fal) as client:
        started = time.monotonic()
        result = client.image("a cat", model=MODEL, on_progress=progress.append)
        elapsed = time.monotonic() - started
    (job,) = fal.jobs.values()
    assert fal.submissions == 1
    assert job.outcome == "ok" and result.request_id == job.request_id
    assert result.images and result.images[0].url
    assert {p.request_id for p in progress} == {job.request_id}
    assert progress[-1].status == "COMPLETED"
    counters = fal.counters
    # One stream (cut), then polling to the end on the same request: the fallback, not a resubmission.
    assert counters["stream"] == 1 and counters["status"] >= 1 and counters["result"] == 1
    assert counters["cancel"] == 0
    assert JOB_SECONDS <= elapsed < DEADLINE


def test_log_lines_are_not_repeated_after_the_cut(fal: FakeFal) -> None:
    """Lines the stream delivered before the cut are not reported again once polling takes over."""
    fal.inject("stream", Fault.cut_after(2))
    progress: list[Progress] = []
    with _client(fal) as client:
        client.image("a cat", model=MODEL, on_progress=progress.append)
    messages = [line["message"] for p in progress for line in p.new_logs]
    assert len(messages) == len(set(messages))
    assert messages[0].startswith("Starting") and messages[-1] == "Done"


def test_a_cut_does_not_turn_the_stream_off_for_later_jobs(fal: FakeFal) -> None:
    """After a cut the next job is followed on the stream again (only a missing stream endpoint turns it off)."""
    fal.inject("stream", Fault.cut_after(1))
    with _client(fal) as client:
        client.image("first", model=MODEL)
        fal.reset_counters()
        client.image("second", model=MODEL)
    assert fal.counters["stream"] == 1 and fal.counters["status"] == 0
    assert fal.submissions == 1  # the second job's one submission (counters were reset in between)


def test_every_stream_cut_still_ends_with_one_result_per_job(fal: FakeFal) -> None:
    """Streams cut on every job of a batch: each job is submitted once and returns its own result."""
    fal.inject("stream", Fault.cut_after(1), times=3)
    with _client(fal) as client:
        ids = [client.image(f"cat {i}", model=MODEL).request_id for i in range(3)]
    assert fal.submissions == 3 and len(set(ids)) == 3
    assert set(ids) == set(fal.jobs) and all(view.outcome == "ok" for view in fal.jobs.values())


def test_stream_cut_then_deadline_cancels_the_same_request(fal: FakeFal) -> None:
    """A job still running at the deadline after a cut is cancelled at fal: the request the stream was following."""
    fal.set_latency(5.0)
    fal.inject("stream", Fault.cut_after(1))
    with _client(fal, timeout=1.0) as client, pytest.raises(FalTimeoutError) as info:
        client.image("a slow cat", model=MODEL)
    (job,) = fal.jobs.values()
    assert info.value.request_id == job.request_id
    assert fal.submissions == 1 and job.outcome == "cancelled"
