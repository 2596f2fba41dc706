"""The in-process journal (``memory:``): the library's default store, bounded, gone with the process.

Fine for one script or one worker process: budgets, stats and results hold for
the life of the process. For anything that must survive a restart or be shared
between processes, use SQLite (one machine), PostgreSQL or Redis (many hosts).

Every query reads running aggregates (per day, per model, overall), never the
stored jobs or records, so ``daily_cost()`` and ``stats()`` cost the same with
ten jobs or ten million. Memory is bounded: open jobs are always kept; of the
finished ones the newest ``max_jobs``; of the records the newest ``max_records``.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from falwrap.aggregates import DurationWindow, Totals, summarize
from falwrap.errors import BudgetExceededError
from falwrap.journal import (
    CHARGED_STATES,
    OPEN_STATES,
    Accepted,
    IdempotencyConflict,
    JobEntry,
    JobIntent,
    JobState,
    RequestTaken,
    Settlement,
)
from falwrap.limiter import ConcurrencyLimit, LeakyBucket
from falwrap.limits import ConcurrencyLimiter, RateLimiter, check_lease
from falwrap.money import display_usd, from_micros, to_micros
from falwrap.records import CallRecord

__all__ = [
    "MemoryJournal",
    "MemoryStore",
    "apply_acceptance",
    "apply_settlement",
    "budget_error",
    "detached",
    "detachment",
]


def budget_error(
    *, spent: int, reserved: int, estimate: int, budget: Decimal, model_id: str | None
) -> BudgetExceededError:
    """The error every store raises when a hold does not fit (amounts in micro-dollars)."""
    return BudgetExceededError(
        spent=display_usd(from_micros(spent)),
        reserved=display_usd(from_micros(reserved)),
        estimate=display_usd(from_micros(estimate)),
        budget=display_usd(budget),
        model_id=model_id,
    )


def _charged(entry: JobEntry) -> int:
    return to_micros(entry.cost) if entry.state in CHARGED_STATES else 0


def _held(entry: JobEntry) -> int:
    return to_micros(entry.estimate) if entry.state is JobState.SUBMITTING else 0


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{attribute.name} must be a whole number >= 1, got {value!r}"
        raise ValueError(msg)


# Validators run when the journal is made, not on every assignment: its counters change on
# every job, and attrs' validate-on-assignment hook is a Python-level __setattr__ for each.
@attrs.define(on_setattr=attrs.setters.NO_OP)
class MemoryJournal:
    """A :class:`~falwrap.journal.Journal` in this process's memory. Thread-safe (one lock).

    Args:
        max_records: How many recent call records :meth:`records` keeps.
        max_jobs: How many finished jobs are kept (with their results); open jobs are never dropped.
        max_days: How many UTC days of daily totals are kept.
        duration_window: How many recent durations p50/p95 are computed from, per scope.
    """

    max_records: int = attrs.field(default=10_000, validator=_positive)
    max_jobs: int = attrs.field(default=10_000, validator=_positive)
    max_days: int = attrs.field(default=400, validator=_positive)
    duration_window: int = attrs.field(default=1000, validator=_positive)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _jobs: OrderedDict[str, JobEntry] = attrs.field(factory=OrderedDict, init=False, repr=False)
    _finished: deque[str] = attrs.field(factory=deque, init=False, repr=False)
    _by_request: dict[str, str] = attrs.field(factory=dict, init=False, repr=False)
    _keys: dict[str, str] = attrs.field(factory=dict, init=False, repr=False)
    _owners: dict[str, datetime] = attrs.field(factory=dict, init=False, repr=False)
    _holds: dict[str, tuple[int, datetime | None]] = attrs.field(factory=dict, init=False, repr=False)
    _hold_micros: int = attrs.field(default=0, init=False, repr=False)
    _submitting_micros: int = attrs.field(default=0, init=False, repr=False)
    _records: deque[CallRecord] = attrs.field(init=False, repr=False)
    # day -> [calls, successes, cost_micros]
    _days: dict[date, list[int]] = attrs.field(factory=dict, init=False, repr=False)
    _total: Totals = attrs.field(init=False, repr=False)
    _models: dict[str, Totals] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._records = deque(maxlen=self.max_records)
        self._total = self._new_totals()

    def _new_totals(self) -> Totals:
        return Totals(DurationWindow(self.duration_window))

    # -- jobs ---------------------------------------------------------------------------------

    def open_job(self, intent: JobIntent, *, budget: Decimal | None, now: datetime) -> tuple[JobEntry, bool]:
        """See :meth:`falwrap.journal.Journal.open_job`."""
        estimate = to_micros(intent.estimate)
        with self._lock:
            if intent.job_id in self._jobs:
                msg = f"job {intent.job_id} is already journaled"
                raise ValueError(msg)
            if intent.idempotency_key is not None:
                existing = self._keyed(intent.idempotency_key, now)
                if existing is not None:
                    if existing.fingerprint != intent.fingerprint:
                        raise IdempotencyConflict(existing)
                    return existing, False
            self._sweep(now)
            self._check_budget(estimate, budget, now, intent.endpoint)
            entry = JobEntry.opened(intent)
            self._put(None, entry)
            if intent.idempotency_key is not None:
                self._keys[intent.idempotency_key] = intent.job_id
            return entry, True

    def _keyed(self, key: str, now: datetime) -> JobEntry | None:
        job_id = self._keys.get(key)
        entry = self._jobs.get(job_id) if job_id is not None else None
        if entry is None or entry.state is JobState.NOT_SENT:
            return None
        if entry.key_expires_at is not None and entry.key_expires_at <= now:
            return None
        return entry

    def accept(self, job_id: str, accepted: Accepted, *, now: datetime) -> JobEntry:
        """See :meth:`falwrap.journal.Journal.accept`."""
        with self._lock:
            entry = self._get(job_id)
            owner = self._by_request.get(accepted.request_id)
            if owner is not None and owner != job_id and owner in self._jobs:
                raise RequestTaken(self._jobs[owner])
            new = apply_acceptance(entry, accepted, now)
            if new is None:
                return entry
            self._put(entry, new)
            return new

    def mark_unknown(self, job_id: str, *, now: datetime) -> JobEntry:
        """See :meth:`falwrap.journal.Journal.mark_unknown`."""
        with self._lock:
            entry = self._get(job_id)
            if entry.state is not JobState.SUBMITTING:
                return entry
            new = attrs.evolve(entry, state=JobState.UNKNOWN)
            self._put(entry, new)
            return new

    def finish(
        self,
        job_id: str,
        *,
        settlement: Settlement | None = None,
        record: CallRecord | None = None,
        now: datetime,
    ) -> bool:
        """See :meth:`falwrap.journal.Journal.finish`."""
        with self._lock:
            entry = self._get(job_id)
            new, settled = apply_settlement(entry, settlement, now)
            # One copy for the record flag and the call's end: copying 26 fields is most of this method's cost.
            changes = detachment(new, now)
            if record is not None and not entry.recorded:
                self._count_call(attrs.evolve(record, job_id=job_id) if record.job_id != job_id else record)
                changes["recorded"] = True
            if changes:
                new = attrs.evolve(new, **changes)
            self._put(entry, new)
            return settled

    def get(self, job_id: str) -> JobEntry | None:
        """See :meth:`falwrap.journal.Journal.get`."""
        with self._lock:
            return self._jobs.get(job_id)

    def find(self, request_id: str) -> JobEntry | None:
        """See :meth:`falwrap.journal.Journal.find`."""
        with self._lock:
            job_id = self._by_request.get(request_id)
            return self._jobs.get(job_id) if job_id is not None else None

    def unsettled(self, *, now: datetime, provisional: bool = True) -> list[JobEntry]:
        """See :meth:`falwrap.journal.Journal.unsettled`."""
        with self._lock:
            found = [
                entry
                for entry in self._jobs.values()
                if (entry.state in OPEN_STATES and not self._alive(entry.owner, now))
                or (provisional and entry.state not in OPEN_STATES and entry.charged and not entry.cost_final)
            ]
        return sorted(found, key=lambda e: e.created_at)

    def _alive(self, owner: str | None, now: datetime) -> bool:
        if owner is None:
            return False
        expires = self._owners.get(owner)
        return expires is not None and expires > now

    def jobs(self, *, since: datetime | None = None, limit: int | None = None) -> list[JobEntry]:
        """See :meth:`falwrap.journal.Journal.jobs`."""
        with self._lock:
            entries = [e for e in self._jobs.values() if since is None or e.created_at >= since]
        entries.sort(key=lambda e: e.created_at, reverse=True)
        return entries if limit is None else entries[:limit]

    def claim(self, job_id: str, owner: str, *, now: datetime) -> bool:
        """See :meth:`falwrap.journal.Journal.claim`."""
        with self._lock:
            entry = self._get(job_id)
            if entry.state not in OPEN_STATES or self._alive(entry.owner, now):
                return False
            self._put(entry, attrs.evolve(entry, owner=owner))
            return True

    def heartbeat(self, owner: str, *, ttl: float, now: datetime) -> None:
        """See :meth:`falwrap.journal.Journal.heartbeat`."""
        with self._lock:
            self._owners[owner] = now + timedelta(seconds=ttl)

    def drop_owner(self, owner: str) -> None:
        """See :meth:`falwrap.journal.Journal.drop_owner`."""
        with self._lock:
            self._owners.pop(owner, None)

    def _get(self, job_id: str) -> JobEntry:
        entry = self._jobs.get(job_id)
        if entry is None:
            raise KeyError(job_id)
        return entry

    def _put(self, old: JobEntry | None, new: JobEntry) -> None:
        """Store ``new`` in place of ``old`` and move the aggregates by the difference (lock held)."""
        self._jobs[new.job_id] = new
        if new.request_id is not None:
            self._by_request[new.request_id] = new.job_id
        self._submitting_micros += _held(new) - (_held(old) if old is not None else 0)
        delta = _charged(new) - (_charged(old) if old is not None else 0)
        if delta:
            self._day(new.day)[2] += delta
            self._total.cost_micros += delta
            self._model(new.endpoint).cost_micros += delta
        if new.done and (old is None or not old.done):
            self._finished.append(new.job_id)
            while len(self._finished) > self.max_jobs:
                self._forget(self._finished.popleft())

    def _forget(self, job_id: str) -> None:
        # Aggregates keep the money and counts; only the job's details go.
        entry = self._jobs.pop(job_id, None)
        if entry is None:
            return
        if entry.request_id is not None and self._by_request.get(entry.request_id) == job_id:
            del self._by_request[entry.request_id]
        if entry.idempotency_key is not None and self._keys.get(entry.idempotency_key) == job_id:
            del self._keys[entry.idempotency_key]

    # -- holds ----------------------------------------------------------------------------------

    def hold(
        self,
        hold_id: str,
        amount: Decimal,
        *,
        budget: Decimal | None,
        model_id: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        """See :meth:`falwrap.journal.Journal.hold`."""
        micros = to_micros(amount)
        with self._lock:
            self._sweep(now)
            self._check_budget(micros, budget, now, model_id)
            self._holds[hold_id] = (micros, expires_at)
            self._hold_micros += micros

    def release(self, hold_id: str) -> None:
        """See :meth:`falwrap.journal.Journal.release`."""
        with self._lock:
            self._end_hold(hold_id)

    def reserved(self, *, now: datetime) -> Decimal:
        """See :meth:`falwrap.journal.Journal.reserved`."""
        with self._lock:
            self._sweep(now)
            return from_micros(self._hold_micros + self._submitting_micros)

    def _end_hold(self, hold_id: str) -> None:
        hold = self._holds.pop(hold_id, None)
        if hold is not None:
            self._hold_micros -= hold[0]

    def _sweep(self, now: datetime) -> None:
        # Holds in flight are few (one per call in flight), so a scan is cheap.
        expired = [hid for hid, (_, expires) in self._holds.items() if expires is not None and expires <= now]
        for hold_id in expired:
            self._end_hold(hold_id)

    def _check_budget(self, micros: int, budget: Decimal | None, now: datetime, model_id: str | None) -> None:
        if budget is None:
            return
        totals = self._days.get(now.date())
        spent = totals[2] if totals else 0
        reserved = self._hold_micros + self._submitting_micros
        if spent + reserved + micros > to_micros(budget):
            raise budget_error(spent=spent, reserved=reserved, estimate=micros, budget=budget, model_id=model_id)

    # -- records --------------------------------------------------------------------------------

    def add_record(self, rec: CallRecord, *, hold_id: str | None = None) -> None:
        """See :meth:`falwrap.journal.Journal.add_record`."""
        with self._lock:
            self._count_call(rec)
            if rec.job_id is None:
                cost = to_micros(rec.cost_usd)
                self._day(rec.day)[2] += cost
                self._total.cost_micros += cost
                self._model(rec.model_id).cost_micros += cost
            if hold_id is not None:
                self._end_hold(hold_id)

    def _count_call(self, rec: CallRecord) -> None:
        self._records.append(rec)
        totals = self._day(rec.day)
        totals[0] += 1
        totals[1] += rec.success
        self._total.add_call(rec.success, rec.duration_ms)
        self._model(rec.model_id).add_call(rec.success, rec.duration_ms)

    def _day(self, day: date) -> list[int]:
        totals = self._days.get(day)
        if totals is None:
            totals = self._days[day] = [0, 0, 0]
            if len(self._days) > self.max_days:
                del self._days[min(self._days)]
        return totals

    def _model(self, model_id: str) -> Totals:
        totals = self._models.get(model_id)
        if totals is None:
            totals = self._models[model_id] = self._new_totals()
        return totals

    def daily_cost(self, day: date) -> Decimal:
        """See :meth:`falwrap.journal.Journal.daily_cost`."""
        with self._lock:
            totals = self._days.get(day)
            return from_micros(totals[2] if totals else 0)

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """See :meth:`falwrap.journal.Journal.stats`."""
        with self._lock:
            if model is None:
                top = self._total.summary()
                per_model = {name: t.summary() for name, t in self._models.items()}
            else:
                found = self._models.get(model)
                top = found.summary() if found else summarize(0, 0, 0, 0.0, ())
                per_model = {model: top} if found else {}
        return {**top, "by_model": per_model}

    def records(self, limit: int | None = None) -> list[CallRecord]:
        """See :meth:`falwrap.journal.Journal.records`."""
        with self._lock:
            return list(itertools.islice(reversed(self._records), limit))

    def close(self) -> None:
        """Nothing to close."""


def apply_acceptance(entry: JobEntry, accepted: Accepted, now: datetime) -> JobEntry | None:
    """The job after fal's answer ``accepted`` (see :meth:`Journal.accept`), or ``None`` when it does not change.

    Shared by every store: an open job becomes ``RUNNING``; a terminal one only gets missing ids.
    """
    if entry.state in (JobState.SUBMITTING, JobState.UNKNOWN):
        state, accepted_at = JobState.RUNNING, now
    elif entry.request_id is None:
        state, accepted_at = entry.state, entry.accepted_at or now
    else:
        return None
    return attrs.evolve(
        entry,
        state=state,
        accepted_at=accepted_at,
        request_id=accepted.request_id,
        status_url=accepted.status_url,
        response_url=accepted.response_url,
        cancel_url=accepted.cancel_url,
        gateway_request_id=accepted.gateway_request_id,
    )


def detached(entry: JobEntry, now: datetime) -> JobEntry:
    """The job once its call has ended: no owner; an open job notes when (see ``JobEntry.finished_at``).

    Shared by every store. Reconciliation reads the time: a lost submission missing from
    fal's request list that long after the last call that could have sent it never arrived.
    """
    changes = detachment(entry, now)
    return attrs.evolve(entry, **changes) if changes else entry


def detachment(entry: JobEntry, now: datetime) -> dict[str, Any]:
    """The fields :func:`detached` changes, and their new values (none when the job is already detached)."""
    if entry.owner is None and (entry.done or entry.finished_at is not None):
        return {}
    if entry.done:
        return {"owner": None}
    return {"owner": None, "finished_at": now}


def apply_settlement(entry: JobEntry, settlement: Settlement | None, now: datetime) -> tuple[JobEntry, bool]:
    """The job after ``settlement`` (see :meth:`Journal.finish`), and whether it became terminal.

    Shared by every store so that the rules are written once: an open job takes the
    outcome; a terminal job with a provisional cost only takes a final cost.

    Raises:
        ValueError: ``NOT_SENT`` for a job fal accepted.
    """
    if settlement is None:
        return entry, False
    if entry.state in OPEN_STATES:
        if settlement.state is JobState.NOT_SENT and entry.state is JobState.RUNNING:
            msg = f"job {entry.job_id} was accepted by fal (request {entry.request_id}); it cannot be NOT_SENT"
            raise ValueError(msg)
        if settlement.state is JobState.NOT_SENT:
            cost = Decimal(0)
        else:
            cost = settlement.cost if settlement.cost is not None else entry.cost
        new = attrs.evolve(
            entry,
            state=settlement.state,
            cost=cost,
            cost_final=settlement.cost_final or settlement.state is JobState.NOT_SENT,
            billable_units=settlement.billable_units,
            result=settlement.result,
            error_code=settlement.error_code,
            error_message=settlement.error_message,
            finished_at=now,
        )
        return new, True
    if not entry.cost_final and settlement.cost_final and settlement.cost is not None:
        return (
            attrs.evolve(
                entry,
                cost=settlement.cost,
                cost_final=True,
                billable_units=settlement.billable_units,
                result=entry.result if entry.result is not None else settlement.result,
            ),
            False,
        )
    return entry, False


class MemoryStore:
    """The ``memory:`` store: a :class:`MemoryJournal` and the in-process limits.

    Args:
        journal: The journal to use (a fresh one by default).
    """

    def __init__(self, journal: MemoryJournal | None = None) -> None:
        self._journal = journal if journal is not None else MemoryJournal()
        self._lock = threading.Lock()
        # One schedule and one cap per store, as the shared stores keep one per namespace.
        self._rates: dict[tuple[float, int], LeakyBucket] = {}
        self._caps: dict[int, ConcurrencyLimit] = {}

    def __repr__(self) -> str:
        return "MemoryStore()"

    @property
    def journal(self) -> MemoryJournal:
        """The in-process journal."""
        return self._journal

    def rate_limiter(self, rate_per_minute: float, burst: int) -> RateLimiter:
        """This store's :class:`~falwrap.limiter.LeakyBucket` at this rate (the same one on every call).

        Raises:
            ConfigurationError: a value is out of range.
        """
        new = LeakyBucket(rate_per_minute, burst)  # validates
        with self._lock:
            return self._rates.setdefault((new.rate_per_minute, new.burst), new)

    def concurrency_limiter(self, max_in_flight: int, *, lease_seconds: float = 60.0) -> ConcurrencyLimiter:
        """This store's :class:`~falwrap.limiter.ConcurrencyLimit` (the same one on every call).

        ``lease_seconds`` is validated and otherwise unused: a place in this process
        is held until released, and goes with the process.

        Raises:
            ConfigurationError: a value is out of range.
        """
        new = ConcurrencyLimit(max_in_flight)  # validates
        check_lease(lease_seconds)
        with self._lock:
            return self._caps.setdefault(new.max_in_flight, new)

    def close(self) -> None:
        """Nothing to close."""
