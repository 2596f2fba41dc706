"""Accounting for calls: the journal entry of each job, the budget, and exactly one record per call.

The client opens a :class:`Ticket` for a call before anything is sent (the
journal's intent, with the budget check), hands it to the job runner as its
:class:`~falwrap.job_types.SubmitListener` (so fal's answer is journaled the moment it
arrives), and closes it with the outcome. Whatever happens in between, the call
leaves one :class:`~falwrap.records.CallRecord`, and the job's money stays in
the journal: charged at its estimate from acceptance until fal says otherwise.

A process announces itself with a heartbeat while it has calls in flight;
jobs of a process whose heartbeat lapsed (it died) are left to reconciliation.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from falwrap.catalog import ModelInfo, actual_cost
from falwrap.errors import BackendUnavailableError, BudgetExceededError, InvalidInputError, error_code
from falwrap.job_types import JobFailed, Output
from falwrap.journal import (
    Accepted,
    IdempotencyConflict,
    JobEntry,
    JobIntent,
    JobState,
    Journal,
    RequestTaken,
    Settlement,
)
from falwrap.ledger import JournalLedger
from falwrap.observers import CallObserver, notify
from falwrap.plan import Plan
from falwrap.records import CallRecord

__all__ = ["Accountant", "Heartbeat", "Ticket", "owner_gone", "owner_id", "settled_record"]

logger = logging.getLogger("falwrap")

#: Seconds a process's heartbeat lasts without a new call: longer than the longest default
#: deadline (a 10-minute video), so a process following a job is never taken for dead.
OWNER_TTL = 900.0

_owner_lock = threading.Lock()
# pid -> this process's owner id; a forked child (a new pid) gets its own.
_owners: dict[int, str] = {}


def owner_gone(owner: str | None) -> bool:
    """Whether ``owner`` is a process of this host that no longer runs (its heartbeat may not have lapsed).

    A process killed with SIGKILL cannot say goodbye; on its own host, its pid tells.
    Owners of other hosts are left to their heartbeat (``False``).
    """
    if owner is None:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner != owner_id()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def owner_id() -> str:
    """This process's name in the journal: host, pid and a random part (new after a fork)."""
    pid = os.getpid()
    with _owner_lock:
        owner = _owners.get(pid)
        if owner is None:
            owner = _owners[pid] = f"{socket.gethostname()}:{pid}:{os.urandom(4).hex()}"
        return owner


class Heartbeat:
    """Keeps this process alive in the journal while it makes calls. Thread-safe.

    The heartbeat is renewed when a call starts, at most every third of
    :data:`OWNER_TTL`, so a busy process writes it rarely and no thread is needed;
    the TTL outlasts any call's default deadline, so a process stays alive for the
    whole of its longest call.
    """

    def __init__(self, ledger: JournalLedger, ttl: float = OWNER_TTL) -> None:
        self._ledger = ledger
        self._ttl = ttl
        self._lock = threading.Lock()
        self._next = 0.0  # when the heartbeat is next renewed
        # Whose heartbeat is known to be in the journal; None before the first, after a failed
        # write and after close() (a forked child has an owner id of its own).
        self._owner: str | None = None

    def enter(self) -> str:
        """A call starts: renew this process's heartbeat if it is a third of the way to lapsing."""
        owner = owner_id()
        now = time.monotonic()
        with self._lock:
            if self._owner != owner:
                # No heartbeat of ours is known to be in the journal: every call waits for this
                # one, or it could journal a job under an owner other processes take for dead.
                self._write(owner)
                self._next, self._owner = now + self._ttl / 3, owner
                return owner
            due = now >= self._next
            if due:
                self._next = now + self._ttl / 3
        if due:
            # The last heartbeat has two thirds of its TTL left: other calls need not wait for this one.
            try:
                self._write(owner)
            except BackendUnavailableError:
                with self._lock:
                    self._owner = None
                raise
        return owner

    def _write(self, owner: str) -> None:
        self._ledger.journal.heartbeat(owner, ttl=self._ttl, now=self._ledger.clock())

    def leave(self) -> None:
        """A call ended (nothing to do: the heartbeat lapses by itself once calls stop)."""

    def close(self) -> None:
        """Tell the journal this process is gone: its open jobs become reconcilable at once."""
        with self._lock:
            self._owner = None
        try:
            self._ledger.journal.drop_owner(owner_id())
        except BackendUnavailableError:
            logger.warning("[falwrap] could not tell the journal this process is closing")


class Ticket:
    """One call's bookkeeping: its current journaled job, and its one record.

    Also the runner's :class:`~falwrap.job_types.SubmitListener`. Used by one thread (the call's).
    """

    def __init__(self, accountant: Accountant, plan: Plan, entry: JobEntry, *, created: bool, started: float) -> None:
        self._accountant = accountant
        self.plan = plan
        self.entry = entry
        #: False when an idempotency key returned an existing job instead of a new one.
        self.created = created
        self.started = started
        self._ended = False
        # A submission may have reached fal and nothing has proven otherwise yet.
        self._in_doubt = False

    @property
    def journal(self) -> Journal:
        """The journal the call writes to."""
        return self._accountant.ledger.journal

    @property
    def owner(self) -> str:
        """This process's name in the journal."""
        return owner_id()

    def now(self) -> datetime:
        """The journal's clock."""
        return self._accountant.now()

    # -- SubmitListener --

    def accepted(self, accepted: Accepted, *, found: bool = False) -> None:
        """fal accepted the job: journal its request id before anything else happens.

        Raises:
            RequestTaken: ``found`` (the request was only found in fal's list) and another
                journaled job owns it.
        """
        try:
            self.entry = self.journal.accept(self.entry.job_id, accepted, now=self._accountant.now())
        except RequestTaken as exc:
            if found:
                raise
            # fal's own answer names a request that another call, whose answer was lost, adopted
            # from fal's list (the inputs were identical): that job holds its cost. This call's
            # job is not a second one; it follows that job.
            settlement = Settlement(JobState.NOT_SENT, error_message=f"fal's request {accepted.request_id}")
            self.journal.finish(self.entry.job_id, settlement=settlement, now=self._accountant.now())
            self.entry = exc.owner
            self.created = False

    def ambiguous(self) -> None:
        """The submission may have reached fal: charge it until reconciled."""
        self._in_doubt = True
        self.entry = self.journal.mark_unknown(self.entry.job_id, now=self._accountant.now())

    def never_arrived(self) -> None:
        """fal's request list proved the ambiguous submission never arrived."""
        self._in_doubt = False

    def known(self, request_id: str) -> bool:
        """Whether another journaled job already owns ``request_id``."""
        other = self.journal.find(request_id)
        return other is not None and other.job_id != self.entry.job_id

    # -- the life of the call --

    def job_failed(self, failure: JobFailed) -> None:
        """A job ran and failed; settle it with what fal billed (its billable units, else nothing).

        When its error answer could not be read, what fal billed is unknown: it stays charged
        at its estimate, provisionally, until reconciliation reads the answer.
        """
        if failure.billed_known:
            cost = self._accountant.cost(self.plan.info, failure.billable_units, None, self.plan.arguments, zero=True)
        else:
            cost = None
        settlement = Settlement(
            JobState.FAILED, cost=cost, cost_final=failure.billed_known, billable_units=failure.billable_units,
            error_code=failure.error.error_code, error_message=str(failure.error),
        )  # fmt: skip
        self.journal.finish(self.entry.job_id, settlement=settlement, now=self._accountant.now())

    def next_job(self) -> None:
        """Open a new job for a resubmission (its estimate is held against the budget again)."""
        self.entry = self._accountant.open_entry(self.plan, key=None, webhook_url=self.entry.webhook_url)

    def succeed(self, output: Output) -> Decimal:
        """The job produced its output: settle it, store the result, record the call; returns its cost."""
        cost = self._accountant.cost(self.plan.info, output.billable_units, output.data, self.plan.arguments)
        settlement = Settlement(
            JobState.SUCCEEDED, cost=cost, cost_final=True, billable_units=output.billable_units, result=output.data
        )
        self._end(settlement, None, cost, output.request_id)
        return cost

    def fail(self, error: BaseException) -> None:
        """The call ends with ``error``: record it; the job is settled only when fal's side is known."""
        if self._ended:
            return
        entry = self.entry
        settlement = None
        nothing_sent = entry.state is JobState.SUBMITTING or (entry.state is JobState.UNKNOWN and not self._in_doubt)
        if self.created and nothing_sent:
            # Nothing was accepted, and no answer was lost that fal's request list has not
            # accounted for: nothing can be billed.
            settlement = Settlement(JobState.NOT_SENT, error_code=error_code(error), error_message=str(error))
        cost = Decimal(0) if settlement is not None or not entry.charged else entry.cost
        request_id = entry.request_id or getattr(error, "request_id", None)
        self._end(settlement, error, cost, request_id)

    def detach(self) -> None:
        """The call returns while the job runs on (``submit()``, or a ``result()`` that gave up
        waiting): leave the job, unrecorded, to whoever learns its outcome."""
        if self._ended:
            return
        self._ended = True
        self._accountant.finish(self.entry, None, None)

    def _end(
        self, settlement: Settlement | None, error: BaseException | None, cost: Decimal, request_id: str | None
    ) -> None:
        self._ended = True
        record = self._accountant.make_record(self.plan, self.started, cost, error, request_id, self.entry.job_id)
        self._accountant.finish(self.entry, settlement, record)


class Accountant:
    """Opens tickets and writes records for one client. Thread-safe.

    Args:
        ledger: The ledger (its journal, budget and clock).
        observers: Told about every record after it is stored.
        idempotency_ttl: Seconds an idempotency key binds later calls to its job.
        clock: Monotonic seconds (durations).
        before_refusal: Called once before a call is refused for budget (to reconcile open jobs,
            which are charged at their estimates and may have cost less); the check is then repeated.
    """

    def __init__(
        self,
        ledger: JournalLedger,
        *,
        observers: Iterable[CallObserver],
        idempotency_ttl: float,
        clock: Callable[[], float] = time.monotonic,
        before_refusal: Callable[[], bool] | None = None,
    ) -> None:
        self.ledger = ledger
        self._observers = tuple(observers)
        self._idempotency_ttl = idempotency_ttl
        self._clock = clock
        self._before_refusal = before_refusal
        self.heartbeat = Heartbeat(ledger)

    def now(self) -> datetime:
        """The ledger's clock: an aware UTC datetime."""
        return self.ledger.clock()

    def open(self, plan: Plan, *, key: str | None = None, webhook_url: str | None = None) -> Ticket:
        """Journal the call's job before anything is sent.

        Raises:
            BudgetExceededError: the estimate does not fit today's budget (nothing journaled).
            InvalidInputError: ``key`` is held by a job with other arguments (nothing journaled).
        """
        started = self._clock()
        self.heartbeat.enter()
        try:
            try:
                entry, created = self._open(plan, key, webhook_url)
            except BudgetExceededError:
                if self._before_refusal is None or not self._before_refusal():
                    raise
                entry, created = self._open(plan, key, webhook_url)
        except BaseException:
            self.heartbeat.leave()
            raise
        return Ticket(self, plan, entry, created=created, started=started)

    def adopt(self, plan: Plan, entry: JobEntry) -> Ticket:
        """A ticket for a call that collects a job opened by another call (``result()``)."""
        self.heartbeat.enter()
        return Ticket(self, plan, entry, created=True, started=self._clock())

    def open_entry(self, plan: Plan, *, key: str | None, webhook_url: str | None) -> JobEntry:
        """Journal one more job for a call already under way (a resubmission)."""
        return self._open(plan, key, webhook_url)[0]

    def _open(self, plan: Plan, key: str | None, webhook_url: str | None) -> tuple[JobEntry, bool]:
        now = self.now()
        intent = JobIntent(
            job_id=os.urandom(16).hex(),
            endpoint=plan.endpoint,
            operation=plan.operation,
            arguments=plan.arguments,
            estimate=plan.estimate,
            owner=owner_id(),
            created_at=now,
            idempotency_key=key,
            key_expires_at=now + timedelta(seconds=self._idempotency_ttl) if key is not None else None,
            webhook_url=webhook_url,
        )
        try:
            return self.ledger.journal.open_job(intent, budget=self.ledger.daily_budget_usd, now=now)
        except IdempotencyConflict as exc:
            msg = (
                f"idempotency_key: this key was used {exc.entry.created_at:%Y-%m-%d %H:%M} UTC for a call to "
                f"{exc.entry.endpoint} with other arguments; a key names one request. Use a new key."
            )
            raise InvalidInputError(msg, field="idempotency_key") from None

    def finish(self, entry: JobEntry, settlement: Settlement | None, record: CallRecord | None) -> None:
        """Apply a call's end to its job and offer the job its record.

        A job has one record, written by the first call (or reconciliation, or webhook) that
        ends with it: an idempotent repeat, a second ``result()`` or a worker following the
        same job is the same logical call, so the journal keeps the first record only.
        """
        try:
            self.ledger.journal.finish(entry.job_id, settlement=settlement, record=record, now=self.now())
        except BackendUnavailableError:
            # The call is over: its result (paid for) or its own error is what the caller must
            # get, not a bookkeeping failure. The record goes to the log in full to be reconciled.
            shown = record.to_dict() if record is not None else None
            logger.exception("[falwrap] could not journal the end of job %s: %s", entry.job_id, shown)
        finally:
            self.heartbeat.leave()
        if record is not None:
            notify(self._observers, record)

    def refused(self, endpoint: str | None, operation: str, started: float, error: BaseException) -> None:
        """Record a call refused before anything was journaled (bad input, no model, budget)."""
        record = CallRecord(
            timestamp=self.now(), model_id=endpoint or "(not chosen)", operation=operation,
            duration_ms=int((self._clock() - started) * 1000), cost_usd=Decimal(0), success=False,
            error_code=error_code(error),
        )  # fmt: skip
        if isinstance(error, BackendUnavailableError):
            # The store just failed to answer: asking it again would only make the call wait longer.
            logger.error("[falwrap] the store is unavailable; the call record %s was not stored", record.to_dict())
        else:
            try:
                self.ledger.journal.add_record(record)
            except BackendUnavailableError:
                logger.exception("[falwrap] could not store the call record %s", record.to_dict())
        notify(self._observers, record)

    def make_record(
        self,
        plan: Plan,
        started: float,
        cost: Decimal,
        error: BaseException | None,
        request_id: str | None,
        job_id: str | None,
    ) -> CallRecord:
        """The record of a call that reached the journal."""
        return CallRecord(
            timestamp=self.now(),
            model_id=plan.endpoint,
            operation=plan.operation,
            duration_ms=int((self._clock() - started) * 1000),
            cost_usd=cost,
            success=error is None,
            error_code=None if error is None else error_code(error),
            request_id=request_id,
            job_id=job_id,
        )

    @staticmethod
    def cost(
        info: ModelInfo | None,
        units: Decimal | None,
        output: dict[str, Any] | None,
        arguments: dict[str, Any],
        *,
        zero: bool = False,
    ) -> Decimal:
        """What a job cost: fal's billable units x price; else counted from the output.

        ``zero``: without billable units the job was not billed (a failed job).
        """
        if info is None or (zero and units is None):
            return Decimal(0)
        return actual_cost(info, billable_units=units, output=output, arguments=arguments)


def settled_record(entry: JobEntry, settlement: Settlement, now: datetime) -> CallRecord:
    """The one record of a job settled outside the call that opened it (a webhook delivery, reconciliation).

    Args:
        entry: The job as journaled before the settlement.
        settlement: Its outcome.
        now: When it was settled; the duration counts from the job's intent.

    Returns:
        The record, charged the settlement's cost, else the job's current charge.
    """
    return CallRecord(
        timestamp=now,
        model_id=entry.endpoint,
        operation=entry.operation,
        duration_ms=max(0, int((now - entry.created_at).total_seconds() * 1000)),
        cost_usd=settlement.cost if settlement.cost is not None else entry.cost,
        success=settlement.state is JobState.SUCCEEDED,
        error_code=settlement.error_code,
        request_id=entry.request_id,
        job_id=entry.job_id,
    )
