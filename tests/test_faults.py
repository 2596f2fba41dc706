"""The fault matrix: every fault in every phase ends in a result or one typed error, in bounded time,
without paying twice.

Each case runs the real fal_client over real HTTP against FakeFal with a
scripted fault, then checks the outcome (result, or exact class and code),
the submissions FakeFal counted, the elapsed time against the deadline, the
friendly message, the request id on the error, and that no client thread is
left behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from falwrap import (
    AuthenticationError,
    FalClient,
    FalConfig,
    FalConnectionError,
    FalTimeoutError,
    InvalidInputError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitConfig,
    RateLimitError,
    RetryConfig,
    RetryDetails,
    ServerError,
    Timeouts,
    set_testing,
)
from falwrap.testing import FakeFal, Fault, JobFailure

MAX_RETRIES = 2
DEADLINE = 6.0
PER_EXCHANGE = 0.5


def _config(fal: FakeFal, *, stream: bool, timeout: float = DEADLINE) -> FalConfig:
    return FalConfig(
        api_key=fal.key,
        base_url=fal.url,
        timeouts=Timeouts(image=timeout, queue_status=PER_EXCHANGE),
        retry=RetryConfig(max_retries=MAX_RETRIES, base_delay=0.05, max_delay=0.2, jitter=False),
        rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100),
        status_stream=stream,
    )


def _client_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("fakefal")}


@attrs.frozen
class Case:
    """One row of the matrix."""

    id: str
    route: str
    fault: Fault
    error: type[Exception] | None = None
    code: str | None = None
    words: tuple[str, ...] = ()
    times: int = 1
    stream: bool = False
    accepted: int = 1
    has_request_id: bool = True
    deadline: float = DEADLINE


LOCKED = {"detail": "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."}
VALIDATION = Fault.validation(("body", "guidance_scale"), "Input should be less than or equal to 20", "less_than_equal")

TRANSIENT = [
    ("503", Fault.request_error(503, "runner_scheduling_failure")),
    ("nginx502", Fault.nginx(502)),
    ("429", Fault.rate_limited()),
    ("reset", Fault.reset()),
    ("stall", Fault.stall(PER_EXCHANGE * 3)),
]

CASES: list[Case] = []
# Transient faults before acceptance are retried; after acceptance the same job is resumed.
for name, fault in TRANSIENT:
    CASES.append(Case(f"submit-{name}", "submit", fault))
    CASES.append(Case(f"status-{name}", "status", fault))
    CASES.append(Case(f"stream-{name}", "stream", fault, stream=True))
    CASES.append(Case(f"result-{name}", "result", fault))
CASES += [
    Case("status-malformed", "status", Fault.malformed_json(202)),
    Case("stream-malformed", "stream", Fault.malformed_json(200), stream=True),
    Case("result-malformed", "result", Fault.malformed_json(200)),
    Case("stream-never-opens-404", "stream", Fault.http(404, json={"detail": "Not Found"}), stream=True),
    Case("stream-every-time-503", "stream", Fault.http(503), times=50, stream=True),
    # The submit answer is unreadable: the job may exist, so fal's request list is asked first;
    # it shows no such request, so the submission is sent again (one job in all).
    Case("submit-malformed", "submit", Fault.malformed_json(200)),
    Case("submit-malformed-accepted", "submit", Fault.after(Fault.malformed_json(200))),
    # Exhausted retries before acceptance: at most max_retries + 1 submissions.
    Case("submit-503-always", "submit", Fault.request_error(503, "runner_scheduling_failure"), ServerError,
         "runner_scheduling_failure", ("3 attempts",), times=50, accepted=0, has_request_id=False),
    Case("submit-429-always", "submit", Fault.rate_limited(), RateLimitError, "RATE_LIMIT",
         ("Slow down",), times=50, accepted=0, has_request_id=False),
    # Every answer lost: each attempt is looked up in fal's request list (a short wait while the
    # list may lag) before the next; it never shows the job, and the error says nothing runs at fal.
    Case("submit-reset-always", "submit", Fault.reset(), FalConnectionError, "SUBMISSION_LOST",
         ("never arrived", "nothing runs at fal"), times=50, accepted=0, has_request_id=False, deadline=14.0),
    # Refusals are not retried.
    Case("submit-401", "submit", Fault.http(401, json={"detail": "No user found for Key ID and Secret"}),
         AuthenticationError, "UNAUTHORIZED", ("FAL_KEY", ".env"), accepted=0, has_request_id=False),
    Case("submit-402", "submit", Fault.http(402), PaymentRequiredError, "PAYMENT_REQUIRED", ("credits",),
         accepted=0, has_request_id=False),
    Case("submit-403-locked", "submit", Fault.http(403, json=LOCKED), PaymentRequiredError, "PAYMENT_REQUIRED",
         ("Exhausted balance", "credits"), accepted=0, has_request_id=False),
    Case("submit-403", "submit", Fault.http(403, json={"detail": "Forbidden"}), AuthenticationError,
         "UNAUTHORIZED", ("FAL_KEY",), accepted=0, has_request_id=False),
    Case("submit-404", "submit", Fault.http(404, json={"detail": "Application not found"}), NotFoundError,
         "NOT_FOUND", ("fal-ai/flux/dev",), accepted=0, has_request_id=False),
    Case("submit-422", "submit", VALIDATION, InvalidRequestError, "less_than_equal",
         ("guidance_scale: Input should be less than or equal to 20",), accepted=0, has_request_id=False),
    # After acceptance, a refusal carries the request id; the job is never resubmitted.
    Case("status-401", "status", Fault.http(401), AuthenticationError, "UNAUTHORIZED", ("FAL_KEY",)),
    Case("status-403", "status", Fault.http(403, json=LOCKED), PaymentRequiredError, "PAYMENT_REQUIRED",
         ("credits",)),
    Case("status-404", "status", Fault.http(404), NotFoundError, "NOT_FOUND", ("request",)),
    Case("status-503-always", "status", Fault.http(503), ServerError, "SERVICE_UNAVAILABLE", ("unavailable",),
         times=50),
    Case("result-404", "result", Fault.http(404), NotFoundError, "NOT_FOUND", ("request",)),
    Case("result-503-always", "result", Fault.nginx(503), ServerError, "SERVICE_UNAVAILABLE", ("unavailable",),
         times=50),
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> Iterator[None]:
    with set_testing(True):
        yield


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix(case: Case) -> None:
    """Each fault x phase gives the expected outcome within the deadline, with the right submissions."""
    with FakeFal(latency=0.3) as fal:
        fal.inject(case.route, case.fault, times=case.times)
        before = _client_threads()
        with FalClient(_config(fal, stream=case.stream, timeout=case.deadline)) as client:
            started = time.monotonic()
            error: BaseException | None = None
            try:
                result = client.image("a cat", size="square")
            except Exception as exc:
                error = exc
            elapsed = time.monotonic() - started
        assert elapsed < case.deadline + 1
        assert _client_threads() <= before
        assert fal.submissions == case.accepted, f"accepted {fal.submissions} jobs"
        assert fal.counters["submit"] <= MAX_RETRIES + 1
        if case.error is None:
            assert error is None, repr(error)
            assert result.images and result.request_id in fal.jobs
            assert fal.submissions == 1
            assert len(fal.billing) == 1
        else:
            assert type(error) is case.error, repr(error)
            assert error.error_code == case.code  # type: ignore[union-attr]
            for word in case.words:
                assert word in str(error)
            request_id = error.request_id  # type: ignore[union-attr]
            if case.has_request_id:
                assert request_id in fal.jobs
            else:
                assert request_id is None
            assert "Traceback" not in str(error)
        records = client.ledger.records()
        assert len(records) == 1
        assert records[0].success is (case.error is None)


def test_a_submission_fal_accepted_whose_answer_was_lost_is_found_not_resent() -> None:
    """fal accepted the job and the connection broke before its answer: found in fal's request list, one job."""
    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.after(Fault.reset()), times=1)
        with FalClient(_config(fal, stream=True)) as client:
            result = client.image("a cat")
            assert client.daily_cost() == fal.billed_total
        assert result.request_id in fal.jobs
        assert fal.counters["submit"] == 1
        assert fal.submissions == 1
        assert len(fal.billing) <= 2


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
def test_retryable_job_failure_is_resubmitted_once(stream: bool) -> None:
    """A job fal reports failed with a retryable error is resubmitted, and that counts as a retry."""
    with FakeFal(latency=0.05) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503, retryable=True))
        hooks: list[RetryDetails] = []
        with FalClient(_config(fal, stream=stream), on_retry=hooks.append) as client:
            result = client.image("a cat")
        assert fal.submissions == 2
        assert len(fal.billing) == 1
        assert [h.phase for h in hooks] == ["resubmit"]
        assert hooks[0].error.error_code == "runner_disconnected"
        assert hooks[0].request_id is not None and hooks[0].request_id != result.request_id


def test_retryable_job_failure_every_time_stops_at_max_retries() -> None:
    """A job that keeps failing retryably is submitted max_retries + 1 times, then ModelError."""
    with FakeFal(latency=0.05) as fal:
        fal.fail_next_jobs(10, JobFailure("runner_disconnected", status=503, retryable=True))
        with FalClient(_config(fal, stream=True)) as client, pytest.raises(ModelError) as info:
            client.image("a cat")
        assert fal.submissions == MAX_RETRIES + 1
        assert info.value.attempts == MAX_RETRIES + 1
        assert info.value.error_code == "runner_disconnected"
        assert info.value.request_id in fal.jobs
        assert len(fal.billing) == 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
def test_non_retryable_job_failure(stream: bool) -> None:
    """A content-policy failure is a ModelError with fal's type and the request id; never resubmitted."""
    with FakeFal(latency=0.05) as fal:
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
        with FalClient(_config(fal, stream=stream)) as client, pytest.raises(ModelError) as info:
            client.image("a cat")
        assert fal.submissions == 1
        assert info.value.error_code == "content_policy_violation"
        assert info.value.request_id in fal.jobs
        assert "content" in str(info.value)
        assert not info.value.retryable


def test_job_failed_without_retryable_header_uses_error_type() -> None:
    """Without X-Fal-Retryable a retryable request error type (request_timeout) is resubmitted."""
    with FakeFal(latency=0.05) as fal:
        fal.fail_next_jobs(1, JobFailure("request_timeout", status=504, retryable=None))
        with FalClient(_config(fal, stream=False)) as client:
            client.image("a cat")
        assert fal.submissions == 2


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
@pytest.mark.parametrize("where", ["queue", "generation"])
def test_deadline_cancels_the_job_at_fal(where: str, stream: bool) -> None:
    """At the deadline the job is cancelled at fal and FalTimeoutError (a TimeoutError) arrives within +1 s."""
    with FakeFal(latency=10.0, concurrency=1) as fal:
        with FalClient(_config(fal, stream=stream, timeout=1.0)) as client:
            if where == "queue":
                blocker = client.submit("fal-ai/flux/dev", {"prompt": "blocker"})
            before = _client_threads()
            started = time.monotonic()
            with pytest.raises(FalTimeoutError) as info:
                client.image("a cat")
            elapsed = time.monotonic() - started
            assert isinstance(info.value, TimeoutError)
            assert 1.0 <= elapsed < 2.0
            request_id = info.value.request_id
            assert request_id in fal.jobs
            assert fal.jobs[request_id].outcome == "cancelled"
            assert "cancelled at fal" in str(info.value)
            assert _client_threads() <= before
            if where == "queue":
                client.cancel(blocker)
        assert fal.counters["cancel"] >= 1
        assert fal.billed_total == 0


def test_deadline_with_failing_cancel_still_raises_in_time(caplog: pytest.LogCaptureFixture) -> None:
    """When the cancel itself fails, FalTimeoutError still comes within deadline + 1 s, and a warning says so."""
    with FakeFal(latency=10.0) as fal:
        fal.inject("cancel", Fault.http(503), times=5)
        with FalClient(_config(fal, stream=True, timeout=1.0)) as client:
            started = time.monotonic()
            with pytest.raises(FalTimeoutError):
                client.image("a cat")
            assert time.monotonic() - started < 2.0
    assert any("could not cancel" in r.getMessage() for r in caplog.records)


def test_explicit_cancel_retries_transient_failure() -> None:
    """client.cancel() retries a 503 on the cancel route and reports the cancellation."""
    with FakeFal(latency=10.0) as fal:
        fal.inject("cancel", Fault.request_error(503, "runner_connection_error"), times=1)
        with FalClient(_config(fal, stream=True)) as client:
            handle = client.submit("fal-ai/flux/dev", {"prompt": "x"})
            assert client.cancel(handle) is True
        assert fal.counters["cancel"] == 2
        assert fal.jobs[handle.request_id].outcome == "cancelled"


def test_retry_after_is_honoured_at_the_server() -> None:
    """A 429 with Retry-After: 2 makes the next submission arrive at least 2 s later (measured by FakeFal)."""
    with set_testing(False), FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.rate_limited(retry_after=2), times=1)
        with FalClient(_config(fal, stream=True)) as client:
            client.image("a cat")
        first, second = fal.submit_times[:2]
        assert second - first >= 2.0
        assert fal.submissions == 1


def test_retry_after_beyond_the_deadline_fails_fast() -> None:
    """A Retry-After longer than the time left is not waited out: the call times out at once."""
    with set_testing(False), FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.rate_limited(retry_after=60), times=1)
        with FalClient(_config(fal, stream=True, timeout=2.0)) as client:
            started = time.monotonic()
            with pytest.raises(FalTimeoutError):
                client.image("a cat")
            assert time.monotonic() - started < 1.0
        assert fal.submissions == 0


def test_fal_client_does_not_retry_on_its_own() -> None:
    """fal_client's ten built-in retries are off: a 429 reaches falwrap's policy after one request."""
    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.rate_limited(), times=50)
        config = attrs.evolve(_config(fal, stream=True), retry=RetryConfig(max_retries=0))
        with FalClient(config) as client, pytest.raises(RateLimitError):
            client.image("a cat")
        assert fal.counters["submit"] == 1


def test_each_retry_logs_a_warning_and_calls_the_hook(caplog: pytest.LogCaptureFixture) -> None:
    """Every retry logs one WARNING (phase, attempt, delay, reason, request id) and reaches on_retry."""
    caplog.set_level(logging.WARNING, logger="falwrap")
    details: list[RetryDetails] = []
    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.request_error(503, "runner_scheduling_failure"), times=1)
        fal.inject("result", Fault.http(502), times=1)
        with FalClient(_config(fal, stream=True), on_retry=details.append) as client:
            result = client.image("a cat")
    assert [d.phase for d in details] == ["submit", "result"]
    assert details[1].request_id == result.request_id
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "runner_scheduling_failure" in warnings[0]
    assert result.request_id in warnings[1]


def test_failing_hook_does_not_break_the_call() -> None:
    """An on_retry hook that raises is logged and ignored; the call still succeeds."""

    def broken(_: RetryDetails) -> None:
        raise RuntimeError("hook bug")

    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.http(503), times=1)
        with FalClient(_config(fal, stream=True), on_retry=broken) as client:
            assert client.image("a cat").images


def test_testing_switch_turns_backoff_sleeps_off() -> None:
    """With set_testing(True), three retries with an 8 s base delay take well under a second."""
    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.http(503), times=3)
        config = attrs.evolve(_config(fal, stream=True), retry=RetryConfig(max_retries=3, base_delay=8, max_delay=8))
        with set_testing(True), FalClient(config) as client:
            started = time.monotonic()
            client.image("a cat")
            assert time.monotonic() - started < 3.0
        assert fal.counters["submit"] == 4


def test_bad_input_still_sends_nothing_with_faults_armed() -> None:
    """Local validation runs before anything else: no request reaches FakeFal."""
    with FakeFal() as fal:
        fal.inject("submit", Fault.http(503), times=5)
        with FalClient(_config(fal, stream=True)) as client, pytest.raises(InvalidInputError):
            client.image("a cat", num_images=9)
        assert sum(fal.counters.values()) == 0


def test_keyboard_interrupt_in_progress_callback_cancels_the_job() -> None:
    """An exception raised by on_progress (even KeyboardInterrupt) cancels the job at fal, then propagates."""
    with FakeFal(latency=5.0) as fal:
        calls: list[Any] = []

        def interrupt(event: Any) -> None:
            calls.append(event)
            raise KeyboardInterrupt

        with FalClient(_config(fal, stream=True)) as client:
            with pytest.raises(KeyboardInterrupt):
                client.image("a cat", on_progress=interrupt)
            (record,) = client.ledger.records()
        (job,) = fal.jobs.values()
        assert job.outcome == "cancelled"
        assert record.error_code == "INTERRUPTED"
