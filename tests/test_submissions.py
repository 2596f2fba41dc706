"""Ambiguous submissions are resolved, not guessed: the submit fault matrix against fal's request list.

For each way a submission can fail (its answer lost after fal accepted the job,
a stalled answer, a connection reset before fal saw it, a 503 before acceptance),
with ``max_retries`` 0 and 3, and fal's request list healthy, lagging or down:
FakeFal ends with at most one job for the call, exactly one where it accepted
one; the call ends in its result or one typed error whose message is true; and
after ``reconcile()`` the ledger equals FakeFal's bill.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import attrs
import pytest

from falwrap import (
    AmbiguousSubmissionError,
    CostLedger,
    FalClient,
    FalConfig,
    FalConnectionError,
    FalwrapError,
    RateLimitConfig,
    RetryConfig,
    ServerError,
    Timeouts,
    set_testing,
)
from falwrap.journal import JobState
from falwrap.reconcile import ReconcileReport
from falwrap.testing import FakeFal, Fault

SCHNELL = "fal-ai/flux/schnell"
PER_EXCHANGE = 0.5


class Clock:
    """The journal's clock, which the test can move forward (reconciliation's waits are in journal time)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


@attrs.frozen
class Submit:
    """One way a submission fails."""

    id: str
    fault: Fault
    fal_accepts: bool  # FakeFal creates the job before the fault
    ambiguous: bool  # no answer came back after the request was sent


SUBMITS = [
    Submit("answer-lost", Fault.after(Fault.reset()), fal_accepts=True, ambiguous=True),
    Submit("answer-stalled", Fault.after(Fault.stall(PER_EXCHANGE * 4)), fal_accepts=True, ambiguous=True),
    Submit("reset-before-fal", Fault.reset(), fal_accepts=False, ambiguous=True),
    Submit("503-before-acceptance", Fault.http(503), fal_accepts=False, ambiguous=False),
]
PLATFORMS = {
    "healthy": None,
    "lagging": Fault.lag(1.0),
    "down": Fault.http(503),
}


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with set_testing(True):
        yield


@pytest.mark.parametrize("retries", [0, 3])
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("case", SUBMITS, ids=[s.id for s in SUBMITS])
def test_the_submit_fault_matrix(case: Submit, platform: str, retries: int) -> None:
    """One job per call wherever fal accepted one; a true message otherwise; ledger == bill after reconcile."""
    clock = Clock()
    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", case.fault)
        if PLATFORMS[platform] is not None:
            fal.inject("requests", PLATFORMS[platform], times=1000)
        config = FalConfig(
            api_key=fal.key, base_url=fal.url,
            timeouts=Timeouts(image=10.0, queue_status=PER_EXCHANGE, model_list=PER_EXCHANGE),
            retry=RetryConfig(max_retries=retries, base_delay=0.01, max_delay=0.02, jitter=False),
            rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100),
        )  # fmt: skip
        with FalClient(config, ledger=CostLedger(clock=clock)) as c:
            error: FalwrapError | None = None
            try:
                result = c.image("a cat", model=SCHNELL)
            except FalwrapError as exc:
                error = exc
            accepted_jobs = fal.submissions
            assert accepted_jobs <= 1
            assert fal.counters["submit"] <= retries + 1
            if case.fal_accepts:
                assert accepted_jobs == 1
            _check_outcome(case, platform, retries, error, accepted_jobs)
            if error is None:
                assert result.request_id in fal.jobs
            fal.clear_faults()
            clock.offset = timedelta(minutes=5)  # long after any lag: fal's list is authoritative now
            report = _reconcile_until_settled(c)
            assert report.unknown == report.still_running == 0, report
            assert c.daily_cost() == fal.billed_total
            assert all(entry.done for entry in c.ledger.journal.jobs())
            assert len(c.ledger.records()) == 1


def _reconcile_until_settled(c: FalClient, timeout: float = 10.0) -> ReconcileReport:
    """reconcile() until fal has finished every job it is still running (jobs here take 50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        report = c.reconcile()
        if report.still_running == 0 or time.monotonic() > deadline:
            return report
        time.sleep(0.05)


def _check_outcome(case: Submit, platform: str, retries: int, error: FalwrapError | None, jobs: int) -> None:
    if not case.ambiguous:
        # A plain refusal before acceptance: retried as usual, never looked up.
        if retries:
            assert error is None
        else:
            assert isinstance(error, ServerError)
            assert jobs == 0
        return
    if platform == "down":
        # fal cannot say: nothing is resent, and the message says the job may be running.
        assert isinstance(error, AmbiguousSubmissionError), repr(error)
        assert isinstance(error, FalConnectionError)
        assert "may have reached fal" in str(error)
        assert "not resubmitted" in str(error)
        assert "reconcile()" in str(error)
        return
    if case.fal_accepts:
        assert error is None, repr(error)  # found in fal's list and adopted, whatever the retries
        return
    if retries:
        assert error is None, repr(error)  # fal's list shows it never arrived: sent again
        assert jobs == 1
    else:
        assert isinstance(error, FalConnectionError)
        assert error.error_code == "SUBMISSION_LOST"
        assert "never arrived" in str(error)
        assert "nothing runs at fal" in str(error)
        assert jobs == 0


def test_an_ambiguous_job_is_charged_until_fal_says() -> None:
    """Platform down: the unknown job keeps its estimate charged, then reconciles to the bill."""
    with FakeFal(latency=0.05) as fal:
        fal.inject("submit", Fault.after(Fault.reset()))
        fal.inject("requests", Fault.http(503), times=1000)
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, retry=RetryConfig(max_retries=1, base_delay=0.01, max_delay=0.02),
            timeouts=Timeouts(model_list=PER_EXCHANGE),
        )  # fmt: skip
        with FalClient(config) as c:
            with pytest.raises(AmbiguousSubmissionError):
                c.image("a cat", model=SCHNELL)
            (entry,) = c.ledger.journal.jobs()
            assert entry.state is JobState.UNKNOWN
            assert c.daily_cost() == Decimal("0.003")
            assert c.reconcile().unknown == 1  # fal still cannot say
            fal.clear_faults()
            report = _reconcile_until_settled(c)
            assert report.still_running == report.unknown == 0
            assert c.daily_cost() == fal.billed_total == Decimal("0.003")
            assert c.ledger.journal.jobs()[0].result is not None
