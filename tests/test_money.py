"""Money follows the job: every way a call can end after fal accepted its job, checked against fal's bill.

FakeFal's server-side bill is what fal would charge. After each fault the
journal keeps the job charged at its estimate; after ``reconcile()`` the ledger
equals the bill to the micro-dollar, and a daily budget never lets the bill pass
it (in these serial cases, not by a cent).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from falwrap import (
    BudgetExceededError,
    FalClient,
    FalConfig,
    FalTimeoutError,
    FalwrapError,
    Progress,
    RateLimitConfig,
    RetryConfig,
    ServerError,
    Timeouts,
    set_testing,
)
from falwrap.journal import JobState
from falwrap.testing import FakeFal, Fault

SCHNELL = "fal-ai/flux/schnell"
DEV = "fal-ai/flux/dev"
RETRIES = 2


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with set_testing(True), FakeFal() as emulator:
        yield emulator


def _client(fal: FakeFal, **overrides: Any) -> FalClient:
    settings: dict[str, Any] = {
        "api_key": fal.key,
        "base_url": fal.url,
        "retry": RetryConfig(max_retries=RETRIES, base_delay=0.01, max_delay=0.02, jitter=False),
        "rate_limit": RateLimitConfig(requests_per_minute=600_000, burst=100),
        "timeouts": Timeouts(image=8.0, queue_status=1.0),
    }
    settings.update(overrides)
    return FalClient(FalConfig(**settings))


def _settled_equals_bill(c: FalClient, fal: FakeFal) -> None:
    report = c.reconcile()
    assert report.unknown == report.still_running == 0, report
    assert c.daily_cost() == fal.billed_total
    assert c.stats()["total_cost_usd"] == fal.billed_total
    assert c.ledger.reserved() == 0
    assert all(entry.done for entry in c.ledger.journal.jobs())


def test_a_result_fetch_failing_every_retry_is_charged_then_reconciled(fal: FakeFal) -> None:
    """The job completed and was billed; the fetch failed max_retries+1 times: charged, then settled exactly."""
    fal.inject("result", Fault.http(503), times=RETRIES + 1)
    with _client(fal) as c:
        with pytest.raises(ServerError):
            c.image("a cat", model=DEV)
        assert fal.billed_total == Decimal("0.025")
        assert c.daily_cost() == Decimal("0.025")  # not $0: the job was accepted
        (record,) = c.ledger.records()
        assert not record.success
        assert record.cost_usd == Decimal("0.025")
        _settled_equals_bill(c, fal)
        entry = c.ledger.journal.jobs()[0]
        assert entry.state is JobState.SUCCEEDED
        assert entry.result is not None and entry.result["images"]
        assert len(c.ledger.records()) == 1  # reconciliation adds no second record for the call


def test_a_spent_budget_is_not_spent_twice_when_a_result_is_lost(fal: FakeFal) -> None:
    """Budget $0.025; the first call's result fetch fails after fal billed it: the second call is refused."""
    fal.inject("result", Fault.http(503), times=RETRIES + 1)
    with _client(fal, daily_budget_usd=Decimal("0.025")) as c:
        with pytest.raises(ServerError):
            c.image("a cat", model=DEV)
        with pytest.raises(BudgetExceededError):
            c.image("a dog", model=DEV)
        assert fal.submissions == 1
        assert fal.billed_total == Decimal("0.025")
        _settled_equals_bill(c, fal)


def test_a_second_result_call_returns_what_the_first_one_missed(fal: FakeFal) -> None:
    """submit(), a failed result() after completion, a second result(): the output; one record, cost once."""
    with _client(fal) as c:
        handle = c.submit(DEV, {"prompt": "a cat"})
        fal.inject("result", Fault.http(503), times=RETRIES + 1)
        with pytest.raises(ServerError):
            c.result(handle)
        output = c.result(handle)
        assert output["images"]
        assert c.daily_cost() == fal.billed_total == Decimal("0.025")
        # The failed result() left the job open (its outcome unknown); the second one settled and recorded it.
        assert [(r.success, r.cost_usd) for r in c.ledger.records()] == [(True, Decimal("0.025"))]
        _settled_equals_bill(c, fal)


def test_a_stream_cut_at_completion_still_ends_in_the_result(fal: FakeFal) -> None:
    """The stream drops right as the job completes: the same request is polled, fetched, paid once."""
    fal.set_latency(0.2, DEV)
    fal.inject("stream", Fault.cut_after(1))
    with _client(fal) as c:
        result = c.image("a cat", model=DEV)
        assert result.cost_usd == fal.billed_total == Decimal("0.025")
        assert fal.submissions == 1
        _settled_equals_bill(c, fal)


@pytest.mark.parametrize("status", ["IN_PROGRESS", "COMPLETED"])
@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_a_progress_callback_raising_leaves_the_job_journaled(
    fal: FakeFal, status: str, raised: type[BaseException]
) -> None:
    """A callback raising (even KeyboardInterrupt) at each status: the job is cancelled or kept, never lost."""
    fal.set_latency(0.3, DEV)

    def on_progress(progress: Progress) -> None:
        if progress.status == status:
            raise raised("stop")

    with _client(fal) as c:
        with pytest.raises(raised):
            c.image("a cat", model=DEV, on_progress=on_progress)
        assert c.daily_cost() == Decimal("0.025")  # charged at its estimate until reconciled
        time.sleep(0.4)  # a cancelled running job still ends at fal; let it
        _settled_equals_bill(c, fal)


def _interrupt_main_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("route", ["submit", "result"])
def test_ctrl_c_during_an_exchange_is_held_until_its_answer_arrives(fal: FakeFal, route: str) -> None:
    """SIGINT while fal's answer is on its way: the answer is journaled first; nothing paid goes unrecorded."""
    fal.inject(route, Fault.after(Fault.stall(0.6, then="respond")))
    with _client(fal, timeouts=Timeouts(image=8.0, queue_status=3.0)) as c:
        timer = _interrupt_main_after(0.2)
        try:
            with pytest.raises(KeyboardInterrupt):
                c.image("a cat", model=DEV)
        finally:
            timer.cancel()
        (entry,) = c.ledger.journal.jobs()
        assert entry.request_id is not None  # the submission's answer was not lost
        assert fal.submissions == 1
        time.sleep(0.2)
        _settled_equals_bill(c, fal)


def test_a_deadline_in_the_queue_cancels_and_is_not_billed() -> None:
    """A job still queued at the deadline is cancelled, charged until reconciled, then settled at $0."""
    with set_testing(True), FakeFal(concurrency=1) as fal:
        fal.set_latency(1.0, SCHNELL)
        with _client(fal, timeouts=Timeouts(image=0.6, queue_status=0.5)) as c:
            blocker = c.submit(SCHNELL, {"prompt": "keeps the only runner busy"})
            with pytest.raises(FalTimeoutError, match="cancelled at fal"):
                c.image("a cat", model=DEV)
            assert c.daily_cost() == Decimal("0.025") + Decimal("0.003")
            assert c.result(blocker, timeout=5)["images"]
            _settled_equals_bill(c, fal)
            assert c.daily_cost() == Decimal("0.003")
            cancelled = next(e for e in c.ledger.journal.jobs() if e.endpoint == DEV)
            assert cancelled.state is JobState.CANCELLED
            assert cancelled.cost_final


def test_a_cancel_a_running_model_ignores_is_billed_when_its_run_ends(fal: FakeFal) -> None:
    """Cancelled while running, the model runs on and fal bills it: charged throughout, settled at the bill."""
    fal.set_latency(0.5, DEV)
    with _client(fal) as c:
        handle = c.submit(DEV, {"prompt": "a cat"})
        time.sleep(0.1)
        assert c.cancel(handle)
        assert c.daily_cost() == Decimal("0.025")
        assert c.reconcile().unknown == 0
        assert c.daily_cost() == Decimal("0.025")  # no units yet: still charged at its estimate
        time.sleep(0.6)
        _settled_equals_bill(c, fal)
        assert fal.billed_total == Decimal("0.025")


def test_a_failed_job_billed_for_gpu_time_is_charged_what_fal_billed(fal: FakeFal) -> None:
    """A 422 after the model ran is billed by fal (its units on the error answer): the ledger matches at once."""
    from falwrap import ModelError
    from falwrap.testing import JobFailure

    fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
    with _client(fal) as c:
        with pytest.raises(ModelError):
            c.image("a cat", model=DEV, size="square_hd", num_images=2)
        assert fal.billed_total == Decimal("0.050")
        assert c.daily_cost() == fal.billed_total
        _settled_equals_bill(c, fal)


def test_many_calls_with_faults_after_completion_end_with_ledger_equal_to_bill(fal: FakeFal) -> None:
    """40 calls, every other result route failing for good: after reconcile(), ledger == bill exactly."""
    with _client(fal) as c:
        for i in range(40):
            if i % 2:
                fal.inject("result", Fault.http(503), times=RETRIES + 1)
            with contextlib.suppress(FalwrapError):
                c.image(f"cat {i}", model=SCHNELL if i % 3 else DEV)
        assert c.daily_cost() >= fal.billed_total
        _settled_equals_bill(c, fal)
        assert c.stats()["total_calls"] == 40
