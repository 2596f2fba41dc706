"""Reconciliation: settling every journaled job whose outcome nobody collected, by asking fal.

A job stays open in the journal when its call ended without the outcome in hand
(a deadline, a failed result fetch, Ctrl-C, a lost submit answer) or when the
process that sent it died. Such a job is charged at its estimate. The
:class:`Reconciler` asks fal what became of it — the queue (status, result)
while fal keeps the result, then fal's platform request list (which keeps the
input and output payloads) — stores the result payload, and records the true
cost. It also revisits finished jobs whose cost is provisional (a job cancelled
while it ran is charged at its estimate unless fal shows it was not billed).

It runs on demand (:meth:`falwrap.FalClient.reconcile`, ``falwrap reconcile``),
once in the background when a client starts on a store holding orphaned jobs,
and before a call is refused for budget (an open job charged at its estimate
may have cost less, or nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from falwrap.accounting import settled_record
from falwrap.catalog import ModelInfo
from falwrap.errors import BackendUnavailableError, FalApiError, NotFoundError
from falwrap.following import DeadlinePassed
from falwrap.job_types import queue_urls
from falwrap.jobs import CLOCK_SKEW, JobRunner
from falwrap.journal import OPEN_STATES, Accepted, JobEntry, JobState, Journal, RequestTaken, Settlement
from falwrap.platform import PlatformApi, PlatformUnavailable, RequestRecord, canonical_json

__all__ = ["ReconcileReport", "ReconciledJob", "Reconciler", "StartupReconciliation", "reconcile_in_background"]

logger = logging.getLogger("falwrap")

#: A submission of a process that died, not in fal's request list this long after its job
#: was opened, never arrived (the list lags the queue by seconds; a call lasts minutes at most).
NOT_ARRIVED_AFTER = timedelta(minutes=15)

#: A submission not in fal's request list this long after the call that sent it ended never
#: arrived (the list lags the queue by seconds).
NOT_ARRIVED_AFTER_CALL = timedelta(seconds=30)

#: A cancelled job whose answer still carries no billable units this long after it was
#: cancelled was not billed: any run the cancel did not stop has ended by then (the longest
#: default deadline is 10 minutes).
CANCELLED_UNBILLED_AFTER = timedelta(minutes=15)

#: Provisional costs older than this are no longer revisited: fal keeps nothing to ask about.
PROVISIONAL_HORIZON = timedelta(days=2)

#: How long after acceptance a job submitted with a webhook is the webhook's to settle: fal
#: delivers the outcome when the job ends and retries a failed delivery for 2 hours; the hour
#: beyond covers the job's own run (the longest default deadline is 10 minutes).
WEBHOOK_DELIVERY_WINDOW = timedelta(hours=3)


@attrs.frozen
class ReconciledJob:
    """What reconciliation did with one job.

    Args:
        job_id: The journal's id.
        endpoint: The fal endpoint.
        request_id: fal's request id, when known (found).
        before: The state it was in.
        after: The state it is in now.
        cost_before: What it was charged before.
        cost_after: What it is charged now.
        note: Why, in a few words.
    """

    job_id: str
    endpoint: str
    request_id: str | None
    before: JobState
    after: JobState
    cost_before: Decimal
    cost_after: Decimal
    note: str


@attrs.frozen
class ReconcileReport:
    """What :meth:`Reconciler.run` found.

    Args:
        settled: Jobs given an outcome (or a final cost) now.
        still_running: Jobs fal is still running.
        unknown: Jobs whose fate fal could not tell yet (still charged at their estimate).
        cost_change: How much the journal's total spend moved (negative: money freed).
        jobs: Each job looked at.
    """

    settled: int = 0
    still_running: int = 0
    unknown: int = 0
    cost_change: Decimal = Decimal(0)
    jobs: tuple[ReconciledJob, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (money as strings)."""
        return {
            "settled": self.settled,
            "still_running": self.still_running,
            "unknown": self.unknown,
            "cost_change": str(self.cost_change),
            "jobs": [
                {**attrs.asdict(job), "before": str(job.before), "after": str(job.after),
                 "cost_before": str(job.cost_before), "cost_after": str(job.cost_after)}
                for job in self.jobs
            ],
        }  # fmt: skip

    def then(self, later: ReconcileReport) -> ReconcileReport:
        """This report followed by ``later``: each job from where it was first seen to where it is now.

        Args:
            later: A report of a reconciliation that ran after this one.

        Returns:
            One report covering both runs.
        """
        merged = {job.job_id: job for job in self.jobs}
        for job in later.jobs:
            first = merged.get(job.job_id)
            merged[job.job_id] = (
                job if first is None else attrs.evolve(job, before=first.before, cost_before=first.cost_before)
            )
        return _report(list(merged.values()))


def release_dead_owners(journal: Journal, now: datetime) -> None:
    """Give up the open jobs of processes of this host that died without saying so (SIGKILL, OOM).

    Their heartbeat would keep the jobs theirs until it lapsed; the pid says sooner.
    """
    from falwrap.accounting import owner_gone

    gone = {
        entry.owner
        for entry in journal.jobs(since=now - PROVISIONAL_HORIZON)
        if entry.state in OPEN_STATES and entry.owner is not None and owner_gone(entry.owner)
    }
    for owner in gone:
        journal.drop_owner(owner)


def _charged(entry: JobEntry) -> Decimal:
    return entry.cost if entry.charged else Decimal(0)


class Reconciler:
    """Settles open journal entries by asking fal. Thread-safe; journal writes settle each job once.

    Args:
        journal: The journal.
        runner: The job runner (status, result, errors).
        platform: fal's platform API.
        model_info: Price lookup by endpoint (``None`` for endpoints outside the catalog).
        cost: Computes a job's cost from units, output and arguments (see ``Accountant.cost``).
        now: The journal's clock (aware UTC).
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        journal: Journal,
        runner: JobRunner,
        platform: PlatformApi,
        *,
        model_info: Callable[[str], ModelInfo | None],
        cost: Callable[..., Decimal],
        now: Callable[[], datetime],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._platform = platform
        self._model_info = model_info
        self._cost = cost
        self._now = now
        self._clock = clock

    @property
    def journal(self) -> Journal:
        """The journal it settles."""
        return self._journal

    def now(self) -> datetime:
        """The journal's clock."""
        return self._now()

    def run(self, *, timeout: float = 60.0, entries: list[JobEntry] | None = None) -> ReconcileReport:
        """Reconcile every unsettled job (or ``entries``), within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        now = self._now()
        if entries is None:
            release_dead_owners(self._journal, now)
        todo = entries if entries is not None else self._journal.unsettled(now=now)
        results: list[ReconciledJob] = []
        for entry in todo:
            if entry.state not in OPEN_STATES and entry.created_at < now - PROVISIONAL_HORIZON:
                continue
            if self._clock() >= deadline:
                results.append(self._result(entry, entry, "not reached before the reconciliation deadline"))
                continue
            results.append(self.one(entry, deadline))
        return _report(results)

    def one(self, entry: JobEntry, deadline: float) -> ReconciledJob:
        """Reconcile one job; never raises for what fal answers (the job stays as it was)."""
        try:
            return self._one(entry, deadline)
        except (FalApiError, PlatformUnavailable, DeadlinePassed) as exc:
            return self._result(entry, entry, f"fal could not tell: {exc}")
        except BackendUnavailableError as exc:
            return self._result(entry, entry, f"the journal could not be written: {exc}")

    def _one(self, entry: JobEntry, deadline: float) -> ReconciledJob:
        if entry.request_id is None:
            found = self.find_submission(entry, deadline)
            if found is None:
                # The last submission was sent before the call ended (when the call is known to
                # have ended), else at any time before its process died.
                if entry.finished_at is not None:
                    quiet_since = entry.finished_at + NOT_ARRIVED_AFTER_CALL
                else:
                    quiet_since = entry.created_at + NOT_ARRIVED_AFTER
                if quiet_since <= self._now():
                    why = "fal's request list shows the submission never arrived"
                    settlement = Settlement(JobState.NOT_SENT, error_code="NOT_SENT", error_message=why)
                    return self._settle(entry, settlement, "fal never received it")
                return self._result(entry, entry, "not in fal's request list yet")
            try:
                entry = self._journal.accept(entry.job_id, found, now=self._now())
            except RequestTaken:
                return self._result(entry, entry, "the request fal shows belongs to another job now")
        accepted = entry.accepted
        assert accepted is not None
        try:
            status = self._runner.status(accepted, entry.endpoint)
        except NotFoundError:
            return self._from_platform(entry, deadline)
        if not status.done:
            return self._result(entry, entry, f"still {status.status.lower().replace('_', ' ')} at fal")
        if status.failed:
            failure = self._runner.job_error(accepted, entry.endpoint, status, deadline, attempts=1)
            if not failure.billed_known:
                return self._result(entry, entry, "failed at fal; its answer could not be read yet")
            return self._failed(entry, failure.error.error_code, str(failure.error), failure.billable_units, deadline)
        try:
            output = self._runner.fetch(accepted, entry.endpoint, deadline)
        except NotFoundError:
            return self._from_platform(entry, deadline)
        cost = self._cost(self._model_info(entry.endpoint), output.billable_units, output.data, dict(entry.arguments))
        settlement = Settlement(
            JobState.SUCCEEDED, cost=cost, cost_final=True, billable_units=output.billable_units, result=output.data
        )
        return self._settle(entry, settlement, "result fetched from fal")

    def _failed(
        self, entry: JobEntry, code: str, message: str, units: Decimal | None, deadline: float
    ) -> ReconciledJob:
        """Settle a job that ended in an error, at what fal billed for it.

        fal sends ``x-fal-billable-units`` with what it bills, error answers included. A failed
        job's answer without them was not billed. A cancelled one is less clear-cut: fal only
        signals a running model, and a model that ignores the signal runs to the end and is
        billed then, while its answer already says cancelled. So a cancelled job is free only
        when it never started, or when its answer still shows no units long after any run
        would have ended (:data:`CANCELLED_UNBILLED_AFTER`); until then it stays charged at
        its estimate, provisionally.
        """
        info = self._model_info(entry.endpoint)
        if code != "client_cancelled" or units is not None:
            state = JobState.CANCELLED if code == "client_cancelled" else JobState.FAILED
            cost = self._cost(info, units, None, dict(entry.arguments), zero=True)
            settlement = Settlement(state, cost=cost, cost_final=True, billable_units=units,
                                    error_code=code, error_message=message)  # fmt: skip
            return self._settle(entry, settlement, f"{state}; fal billed {units or 0} units")
        started = self._started(entry, deadline)
        cancelled_at = entry.finished_at or self._now()
        if started is False or (started and self._now() - cancelled_at >= CANCELLED_UNBILLED_AFTER):
            settlement = Settlement(JobState.CANCELLED, cost=Decimal(0), cost_final=True,
                                    error_code=code, error_message=message)  # fmt: skip
            why = "it never started" if started is False else "no units long after it could have run"
            return self._settle(entry, settlement, f"cancelled; not billed ({why})")
        settlement = Settlement(JobState.CANCELLED, error_code=code, error_message=message)
        return self._settle(entry, settlement, "cancelled while running: charged at its estimate for now")

    def _started(self, entry: JobEntry, deadline: float) -> bool | None:
        """Whether fal started the job (``None``: fal's request list cannot tell)."""
        try:
            records = self._platform.requests(entry.endpoint, deadline=deadline, request_id=entry.request_id)
        except PlatformUnavailable:
            return None
        for record in records:
            if record.request_id == entry.request_id:
                return record.started_at is not None
        return None

    def _from_platform(self, entry: JobEntry, deadline: float) -> ReconciledJob:
        """The queue no longer knows the job (its result expired): read fal's request list."""
        records = self._platform.requests(entry.endpoint, deadline=deadline, request_id=entry.request_id)
        record = next((r for r in records if r.request_id == entry.request_id), None)
        if record is None:
            return self._result(entry, entry, "neither the queue nor fal's request list knows it")
        if not record.finished:
            return self._result(entry, entry, "still running at fal")
        if record.succeeded and isinstance(record.json_output, dict):
            info = self._model_info(entry.endpoint)
            cost = self._cost(info, None, record.json_output, dict(entry.arguments))
            settlement = Settlement(JobState.SUCCEEDED, cost=cost, cost_final=True, result=record.json_output)
            return self._settle(entry, settlement, "result read from fal's request list")
        code = "client_cancelled" if record.status_code == 499 else f"HTTP_{record.status_code}"
        return self._failed(entry, code, f"fal's request list reports HTTP {record.status_code}", None, deadline)

    def find_submission(self, entry: JobEntry, deadline: float) -> Accepted | None:
        """The request fal received for a submission whose answer was lost, or ``None``."""
        wanted = canonical_json(dict(entry.arguments))

        def ours(record: RequestRecord) -> bool:
            if canonical_json(record.json_input) != wanted:
                return False
            owner = self._journal.find(record.request_id)
            return owner is None or owner.job_id == entry.job_id

        records = self._platform.requests(
            entry.endpoint, deadline=deadline, start=entry.created_at - CLOCK_SKEW, until=ours
        )
        for record in records:
            if ours(record):
                return queue_urls(entry.endpoint, record.request_id)
        return None

    def _settle(self, entry: JobEntry, settlement: Settlement, note: str) -> ReconciledJob:
        now = self._now()
        record = settled_record(entry, settlement, now)
        self._journal.finish(entry.job_id, settlement=settlement, record=record, now=now)
        after = self._journal.get(entry.job_id) or entry
        return self._result(entry, after, note)

    @staticmethod
    def _result(before: JobEntry, after: JobEntry, note: str) -> ReconciledJob:
        return ReconciledJob(
            job_id=before.job_id,
            endpoint=before.endpoint,
            request_id=after.request_id,
            before=before.state,
            after=after.state,
            cost_before=_charged(before),
            cost_after=_charged(after),
            note=note,
        )


def _report(results: list[ReconciledJob]) -> ReconcileReport:
    settled = sum(
        1 for r in results if r.after not in OPEN_STATES and (r.before in OPEN_STATES or r.cost_before != r.cost_after)
    )
    running = sum(1 for r in results if r.after is JobState.RUNNING)
    unknown = sum(1 for r in results if r.after in (JobState.UNKNOWN, JobState.SUBMITTING))
    change = sum((r.cost_after - r.cost_before for r in results), Decimal(0))
    return ReconcileReport(settled, running, unknown, change, tuple(results))


class StartupReconciliation:
    """The one bounded reconciliation a client runs in the background when it starts on a store
    holding orphaned jobs; :meth:`falwrap.FalClient.reconcile` waits for it and reports what it did.

    Args:
        reconciler: The client's reconciler.
        orphans: The jobs to settle.
        timeout: Longest the run may take, seconds.
    """

    def __init__(self, reconciler: Reconciler, orphans: list[JobEntry], timeout: float) -> None:
        self._reconciler = reconciler
        self._orphans = orphans
        self._timeout = timeout
        self.report: ReconcileReport | None = None
        self._thread = threading.Thread(target=self._run, name="falwrap-reconcile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            report = self._reconciler.run(timeout=self._timeout, entries=self._orphans)
        except Exception:
            logger.exception("[falwrap] background reconciliation failed")
            return
        self.report = report
        logger.info(
            "[falwrap] reconciled %d orphaned job(s): %d settled, %d still running, %d unknown, cost change $%s",
            len(self._orphans), report.settled, report.still_running, report.unknown, report.cost_change,
        )  # fmt: skip

    def wait(self, timeout: float) -> ReconcileReport | None:
        """Wait up to ``timeout`` seconds for the run to end.

        Returns:
            Its report, or ``None`` when it failed or is still running.
        """
        self._thread.join(max(0.0, timeout))
        return None if self._thread.is_alive() else self.report


def reconcile_in_background(reconciler: Reconciler, *, timeout: float = 60.0) -> StartupReconciliation | None:
    """Start one bounded reconciliation on a daemon thread if the journal holds jobs nobody owns.

    For a client that starts on a store where another process died with jobs in
    flight. A job fal accepted with a webhook URL is left alone within
    :data:`WEBHOOK_DELIVERY_WINDOW`: fal will deliver its outcome, and the delivery,
    not a worker starting meanwhile, settles it (and sends the app's "job finished"
    signal). An explicit :meth:`Reconciler.run` still settles it. Returns the run,
    or ``None`` when there was nothing to do (or the journal could not be read: the
    next explicit reconcile will try again).
    """
    try:
        now = reconciler.now()
        release_dead_owners(reconciler.journal, now)
        orphans = [
            entry
            for entry in reconciler.journal.unsettled(now=now, provisional=False)
            if not _awaiting_delivery(entry, now)
        ]
    except BackendUnavailableError:
        return None
    if not orphans:
        return None
    return StartupReconciliation(reconciler, orphans, timeout)


def _awaiting_delivery(entry: JobEntry, now: datetime) -> bool:
    """Whether fal may still deliver the outcome of ``entry`` to its webhook."""
    accepted_at = entry.accepted_at
    return (
        entry.webhook_url is not None
        and entry.state is JobState.RUNNING
        and accepted_at is not None
        and now - accepted_at < WEBHOOK_DELIVERY_WINDOW
    )
