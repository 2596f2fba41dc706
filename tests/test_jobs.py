"""The job runner alone: fal's queue protocol against a scripted in-memory fal, on a fake clock.

No real time passes and no socket opens: the runner's HTTP client is the real
fal_client/httpx stack over falwrap's transport, whose inner transport is an
``httpx.MockTransport`` answering from a script. The tests over real HTTP against
FakeFal (tests/test_client.py, test_faults.py, test_stream.py) cover the same
paths end to end; these pin the runner's own decisions exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import fal_client
import httpx
import pytest

from falwrap.errors import AmbiguousSubmissionError, FalConnectionError, FalTimeoutError, ModelError, ServerError
from falwrap.following import NO_STREAM_FOR
from falwrap.job_types import JobFailed, JobSpec, RequestOptions
from falwrap.jobs import JobRunner
from falwrap.journal import Accepted
from falwrap.platform import PlatformApi
from falwrap.retry import RetryDetails, RetryPolicy
from falwrap.transport import FalTransport

QUEUE = "https://queue.fal.run"
ENDPOINT = "fal-ai/flux/dev"


class FakeClock:
    """Monotonic time that moves only when the runner sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@attrs.define
class ScriptedFal:
    """Answers the queue protocol from a script; records every request."""

    clock: FakeClock
    done_after: float = 0.0
    stream: bool = False
    result_status: int = 200
    result_body: dict[str, Any] = attrs.field(factory=lambda: {"images": [{"url": "https://v3.fal.media/a.png"}]})
    result_headers: dict[str, str] = attrs.field(factory=lambda: {"x-fal-billable-units": "1"})
    status_faults: list[int] = attrs.field(factory=list)
    submit_fault: str | None = None
    platform: list[dict[str, Any]] | None = None
    platform_status: int = 200
    failed: dict[str, Any] | None = None
    requests: list[httpx.Request] = attrs.field(factory=list)
    submitted_at: float = 0.0

    def count(self, method: str, suffix: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path.endswith(suffix))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        base = f"{QUEUE}/fal-ai/flux/requests/r1"
        if request.url.host == "api.fal.ai":
            if self.platform is None or self.platform_status != 200:
                return httpx.Response(self.platform_status, json={"error": {"type": "x", "message": "down"}})
            return httpx.Response(200, json={"items": self.platform, "next_cursor": None, "has_more": False})
        if request.method == "POST":
            if self.submit_fault == "reset":
                raise httpx.ReadError("connection reset after sending", request=request)
            self.submitted_at = self.clock()
            body = {"status": "IN_QUEUE", "request_id": "r1", "response_url": base,
                    "status_url": f"{base}/status", "cancel_url": f"{base}/cancel", "queue_position": 0}  # fmt: skip
            return httpx.Response(200, json=body)
        if path.endswith("/status/stream"):
            if not self.stream:
                return httpx.Response(404, json={"detail": "Not Found"})
            final = {"status": "COMPLETED", "logs": None, **(self.failed or {})}
            text = f"data: {json.dumps({'status': 'IN_PROGRESS', 'logs': None})}\n\ndata: {json.dumps(final)}\n\n"
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        if path.endswith("/status"):
            if self.status_faults:
                return httpx.Response(self.status_faults.pop(0), text="<html>bad gateway</html>")
            if self.clock() - self.submitted_at < self.done_after:
                return httpx.Response(202, json={"status": "IN_PROGRESS", "logs": []})
            return httpx.Response(200, json={"status": "COMPLETED", "logs": [], **(self.failed or {})})
        if path.endswith("/cancel"):
            return httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
        return httpx.Response(self.result_status, json=self.result_body, headers=self.result_headers)


class Listener:
    """A SubmitListener recording what the runner told it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.known_ids: set[str] = set()

    def accepted(self, accepted: Accepted, *, found: bool = False) -> None:
        self.events.append(f"{'found' if found else 'accepted'} {accepted.request_id}")

    def ambiguous(self) -> None:
        self.events.append("ambiguous")

    def never_arrived(self) -> None:
        self.events.append("never arrived")

    def known(self, request_id: str) -> bool:
        return request_id in self.known_ids


def make_runner(
    fal: ScriptedFal, *, retries: int = 3, stream: bool = False, hooks: tuple[Callable[[RetryDetails], None], ...] = ()
) -> JobRunner:
    clock = fal.clock
    http = httpx.Client(transport=FalTransport(None, httpx.MockTransport(fal)), headers={"Authorization": "Key k:s"})
    sync = fal_client.SyncClient(key="k:s")
    sync.__dict__["_client"] = http
    policy = RetryPolicy(max_retries=retries, base_delay=1.0, max_delay=8.0, jitter=False)
    platform = PlatformApi(http, policy=policy, per_exchange=5.0, clock=clock, sleep=clock.sleep)
    wall = datetime(2026, 12, 1, tzinfo=timezone.utc)
    return JobRunner(
        sync, http, policy=policy, per_exchange=5.0, poll_interval=0.1, status_stream=stream, platform=platform,
        hooks=hooks, clock=clock, sleep=clock.sleep, wait=clock.sleep,
        wall_clock=lambda: wall + timedelta(seconds=clock() - 1000),
    )  # fmt: skip


def spec(clock: FakeClock, timeout: float = 60.0, arguments: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec(ENDPOINT, arguments or {"prompt": "a cat"}, clock() + timeout, timeout, clock(), RequestOptions())


def test_a_job_is_submitted_polled_and_fetched_with_its_billable_units() -> None:
    """Submit, poll until COMPLETED, fetch: the output carries fal's billable units; polls back off."""
    clock = FakeClock()
    fal = ScriptedFal(clock, done_after=3.0)
    runner = make_runner(fal)
    listener = Listener()
    job = spec(clock)
    accepted = runner.submit(job, listener)
    output = runner.complete(accepted, job)
    assert listener.events == ["accepted r1"]
    assert output.request_id == "r1"
    assert output.billable_units == Decimal(1)
    assert fal.count("POST") == 1
    polls = fal.count("GET", "/status")
    # 0.1 s apart for the first second, then a tenth of the job's age: about 10 + 10 ln 3 polls
    # for a 3 s job, not the 30 a fixed 0.1 s interval would make.
    assert 20 <= polls <= 25
    assert 3.0 <= clock.now - 1000 <= 3.4
    assert max(clock.slept) <= 0.35


def test_the_start_timeout_is_the_time_left_and_options_become_headers() -> None:
    """fal is told to drop the job if it cannot start before the call's deadline, and gets the options' headers."""
    clock = FakeClock()
    fal = ScriptedFal(clock)
    runner = make_runner(fal)
    options = RequestOptions(priority="low", server_retries=False, fallbacks=False, object_lifecycle=3600)
    job = attrs.evolve(spec(clock, timeout=90), options=options)
    runner.submit(job, Listener())
    (post,) = [r for r in fal.requests if r.method == "POST"]
    assert float(post.headers["x-fal-request-timeout"]) == pytest.approx(90.0)
    assert post.headers["x-fal-queue-priority"] == "low"
    assert post.headers["x-fal-no-retry"] == "1"
    assert post.headers["x-fal-disable-fallbacks"] == "true"
    assert json.loads(post.headers["x-fal-object-lifecycle-preference"]) == {"expiration_duration_seconds": 3600}


def test_transient_status_failures_are_retried_with_backoff_and_hooks() -> None:
    """Two 502s while polling: retried on the same request id after 1 s then 2 s, each told to the hooks."""
    clock = FakeClock()
    fal = ScriptedFal(clock, status_faults=[502, 502])
    seen: list[RetryDetails] = []
    runner = make_runner(fal, hooks=(seen.append,))
    job = spec(clock)
    runner.complete(runner.submit(job, Listener()), job)
    assert [(d.phase, d.attempt, d.delay, d.request_id) for d in seen] == [
        ("status", 2, 1.0, "r1"),
        ("status", 3, 2.0, "r1"),
    ]
    assert fal.count("POST") == 1


def test_the_deadline_cancels_the_job_and_raises_in_time() -> None:
    """A job still running at the deadline is cancelled at fal; FalTimeoutError names the request."""
    clock = FakeClock()
    fal = ScriptedFal(clock, done_after=1e9)
    runner = make_runner(fal)
    job = spec(clock, timeout=5.0)
    with pytest.raises(FalTimeoutError, match="r1") as info:
        runner.complete(runner.submit(job, Listener()), job)
    assert "cancelled at fal" in str(info.value)
    assert fal.count("PUT", "/cancel") == 1
    assert clock.now - 1000 <= 5.0 + 0.01


def test_a_host_without_a_status_stream_is_polled_for_a_while() -> None:
    """After the stream answers 404 on a host, later jobs there poll at once, until NO_STREAM_FOR passes."""
    clock = FakeClock()
    fal = ScriptedFal(clock, stream=False)
    runner = make_runner(fal, stream=True)
    for _ in range(3):
        job = spec(clock)
        runner.complete(runner.submit(job, Listener()), job)
    assert fal.count("GET", "/status/stream") == 1
    clock.now += NO_STREAM_FOR + 1
    job = spec(clock)
    runner.complete(runner.submit(job, Listener()), job)
    assert fal.count("GET", "/status/stream") == 2


def test_the_stream_follows_a_job_in_one_request() -> None:
    """Where the stream works, a job costs submit + stream + result: no polls, no sleeps."""
    clock = FakeClock()
    fal = ScriptedFal(clock, stream=True)
    runner = make_runner(fal, stream=True)
    job = spec(clock)
    runner.complete(runner.submit(job, Listener()), job)
    assert [r.method + " " + r.url.path.rsplit("/", 1)[-1] for r in fal.requests] == [
        "POST dev", "GET stream", "GET r1"
    ]  # fmt: skip
    assert clock.slept == []


def test_a_failed_job_reports_its_error_and_billed_units() -> None:
    """A job that ran and failed raises JobFailed with the typed error and what fal billed."""
    clock = FakeClock()
    detail = {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]}
    fal = ScriptedFal(
        clock, failed={"error": "flagged", "error_type": "content_policy_violation"}, result_status=422,
        result_body=detail, result_headers={"x-fal-billable-units": "0.5", "x-fal-retryable": "false"},
    )  # fmt: skip
    runner = make_runner(fal)
    job = spec(clock)
    with pytest.raises(JobFailed) as info:
        runner.complete(runner.submit(job, Listener()), job)
    assert isinstance(info.value.error, ModelError)
    assert info.value.error.error_code == "content_policy_violation"
    assert info.value.billable_units == Decimal("0.5")


def test_a_malformed_result_is_retried_then_reported() -> None:
    """A result that is not a JSON object is retried on the same request, then a ServerError."""
    clock = FakeClock()
    fal = ScriptedFal(clock, result_body=["not", "an", "object"])  # type: ignore[arg-type]
    runner = make_runner(fal, retries=2)
    job = spec(clock)
    with pytest.raises(ServerError, match="could not be read") as info:
        runner.complete(runner.submit(job, Listener()), job)
    assert info.value.error_code == "MALFORMED_RESPONSE"
    assert fal.count("GET", "/r1") == 3


# -- a lost submission answer -----------------------------------------------------------------------


def _platform_item(arguments: dict[str, Any], request_id: str = "r-found") -> dict[str, Any]:
    return {
        "request_id": request_id, "endpoint_id": ENDPOINT, "sent_at": "2026-12-01T00:00:00Z", "started_at": None,
        "ended_at": None, "status_code": None, "json_input": arguments, "json_output": None,
    }  # fmt: skip


def test_a_lost_answer_is_found_in_fals_request_list_and_adopted() -> None:
    """The connection broke after the POST was sent: the job is found by its input; nothing is resent."""
    clock = FakeClock()
    job = spec(clock)
    fal = ScriptedFal(clock, submit_fault="reset", platform=[_platform_item(dict(job.arguments))])
    runner = make_runner(fal)
    listener = Listener()
    accepted = runner.submit(job, listener)
    assert accepted.request_id == "r-found"
    assert accepted.status_url == f"{QUEUE}/fal-ai/flux/requests/r-found/status"
    assert listener.events == ["ambiguous", "found r-found"]
    assert fal.count("POST") == 1


def test_a_request_already_owned_by_another_job_is_not_adopted() -> None:
    """Two identical inputs: the one another journaled job owns is skipped."""
    clock = FakeClock()
    job = spec(clock)
    items = [_platform_item(dict(job.arguments), "r-other"), _platform_item(dict(job.arguments), "r-mine")]
    fal = ScriptedFal(clock, submit_fault="reset", platform=items)
    listener = Listener()
    listener.known_ids.add("r-other")
    assert make_runner(fal).submit(job, listener).request_id == "r-mine"


def test_a_lost_answer_fal_never_received_is_safe_to_resend() -> None:
    """fal's list stays without the job through the lag window: a retryable error says it is safe to resend."""
    clock = FakeClock()
    fal = ScriptedFal(clock, submit_fault="reset", platform=[_platform_item({"prompt": "someone else"})])
    runner = make_runner(fal)
    listener = Listener()
    with pytest.raises(FalConnectionError, match="never arrived: nothing runs at fal") as info:
        runner.submit(spec(clock), listener)
    assert listener.events == ["ambiguous", "never arrived"]
    assert info.value.retryable
    assert info.value.error_code == "SUBMISSION_LOST"
    assert fal.count("GET", "/by-endpoint") >= 3  # looked again while the list could lag


@pytest.mark.parametrize("status", [401, 503])
def test_when_fal_cannot_tell_nothing_is_resent(status: int) -> None:
    """fal's request list refuses or fails: AmbiguousSubmissionError, one POST, reconcile() named."""
    clock = FakeClock()
    fal = ScriptedFal(clock, submit_fault="reset", platform=[], platform_status=status)
    runner = make_runner(fal, retries=1)
    listener = Listener()
    with pytest.raises(AmbiguousSubmissionError, match="reconcile") as info:
        runner.submit(spec(clock), listener)
    assert isinstance(info.value, FalConnectionError)
    assert listener.events == ["ambiguous"]
    assert fal.count("POST") == 1
