"""The cost ledger: daily spend, stats, budgets and reservations, as a view of the journal.

Money follows the job, not the call: the :mod:`journal <falwrap.journal>` records
every job fal accepted, and the ledger reads spend, stats and budgets from it.
A ledger adds only the *holds* of the public :class:`Reservation` API and its clock.

How an application can use a ledger by hand (the client does the job-level part)::

    with ledger.reserve(estimate, model_id=model) as hold:   # BudgetExceededError here, before any HTTP
        ...                                                   # the work
        ledger.record(CallRecord(...), reservation=hold)      # adds the cost, ends the hold

``record(rec, reservation=hold)`` adds the record's cost and ends the hold in one
atomic step, so spend is never counted twice and never missing. ``hold.settle(actual)``
and ``hold.release()`` only end the hold.

:class:`CostLedger` keeps everything in this process (a :class:`~falwrap.backends.memory.MemoryJournal`);
``RedisLedger`` and the SQL stores share it between processes (see :mod:`falwrap.backends`).
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from falwrap.money import MICRO_DOLLAR, from_micros, quantize_usd, to_micros
from falwrap.observers import format_call_log, log_call
from falwrap.records import CallRecord, utc_day, utc_now

if TYPE_CHECKING:
    from falwrap.journal import Journal

__all__ = [
    "DEFAULT_RESERVATION_TTL",
    "MICRO_DOLLAR",
    "CallRecord",
    "CostLedger",
    "JournalLedger",
    "Ledger",
    "Reservation",
    "format_call_log",
    "from_micros",
    "log_call",
    "quantize_usd",
    "to_micros",
    "utc_day",
    "utc_now",
]

#: Seconds an open hold lives by default: longer than the longest call (a 10-minute video
#: deadline), short enough that a hung or crashed caller frees the budget the same hour.
DEFAULT_RESERVATION_TTL: float | None = 900.0

ReservationState = Literal["held", "settled", "released"]


def new_reservation_id() -> str:
    """A random id unique across processes (no uuid import: ``import falwrap`` stays cheap)."""
    return os.urandom(12).hex()


@attrs.define(eq=False)
class Reservation:
    """A hold on part of today's budget for one call in flight; made by ``Ledger.reserve()``.

    The hold ends exactly once, by whichever comes first: ``ledger.record(rec,
    reservation=self)`` (the record's cost becomes spend, atomically), :meth:`settle`,
    :meth:`release`, leaving the ``with`` block, the ledger's TTL, or garbage collection
    of an unsettled reservation (a thread that died mid-call frees its hold). Later
    attempts are no-ops. Thread-safe.

    Keep a reference for as long as the call runs: a reservation nobody references is
    collected, and its hold is freed with it.

    Attributes:
        amount: The held amount (quantised ``Decimal``).
        model_id: The model the call is for, if given.
        id: Unique id of the hold (also its key in Redis).
    """

    amount: Decimal
    model_id: str | None
    id: str
    _owner: object = attrs.field(repr=False)
    _end: Callable[[str], None] = attrs.field(repr=False)
    _on_collect: Callable[[str], None] = attrs.field(repr=False)
    _state: ReservationState = attrs.field(default="held", init=False)
    _actual_cost: Decimal | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _finalizer: weakref.finalize[[str], Reservation] | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # The callback must not reference self, or the reservation could never be collected.
        self._finalizer = weakref.finalize(self, self._on_collect, self.id)
        # At interpreter exit there is nobody left to release to; Redis holds expire by TTL.
        self._finalizer.atexit = False

    @property
    def state(self) -> ReservationState:
        """``"held"``, ``"settled"`` or ``"released"``."""
        return self._state

    @property
    def actual_cost(self) -> Decimal | None:
        """The actual cost given when the hold was settled, else ``None``."""
        return self._actual_cost

    def settle(self, actual_cost: Decimal) -> None:
        """End the hold, noting what the call actually cost. Idempotent.

        This does **not** add spend: spend comes only from ``ledger.record()``. Prefer
        ``ledger.record(rec, reservation=self)``, which does both atomically.

        Args:
            actual_cost: The call's actual cost (``Decimal``), kept in :attr:`actual_cost`.

        Raises:
            TypeError, ValueError: ``actual_cost`` is not a valid amount.
        """
        cost = quantize_usd(actual_cost, name="actual_cost")
        if self._finish("settled", cost):
            self._end(self.id)

    def release(self) -> None:
        """End the hold without a cost (the call was not made or is not recorded). Idempotent."""
        if self._finish("released", None):
            self._end(self.id)

    def _finish(self, state: ReservationState, cost: Decimal | None) -> bool:
        """Mark the hold ended; True for the one caller that actually ended it (ledger-internal)."""
        with self._lock:
            if self._state != "held":
                return False
            self._state = state
            self._actual_cost = cost
            if self._finalizer is not None:
                self._finalizer.detach()
            return True

    def _claim_for(self, ledger: object, cost: Decimal) -> bool:
        """Settle on behalf of ``ledger.record()``; the ledger ends the hold itself, atomically."""
        if self._owner is not ledger:
            msg = f"reservation {self.id} belongs to another ledger"
            raise ValueError(msg)
        return self._finish("settled", cost)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Whatever happened, a hold must not outlive its block; after record() this is a no-op.
        self.release()


@runtime_checkable
class Ledger(Protocol):
    """What the client needs from a ledger; :class:`CostLedger` and ``RedisLedger`` both provide it.

    Every method is thread-safe.
    """

    @property
    def daily_budget_usd(self) -> Decimal | None:
        """Today's spending cap, or ``None`` for no cap."""

    @property
    def journal(self) -> Journal:
        """The journal this ledger reads: jobs, holds and records."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """The ledger's clock (aware UTC): it decides what "today" is."""

    def reserve(self, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """Hold ``amount`` of today's budget, atomically; raise ``BudgetExceededError`` if it does not fit."""

    def adopt(self, reservation_id: str, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """A handle on an existing hold (made by another process), so this one can end it."""

    def reserved(self) -> Decimal:
        """The total currently held by open reservations."""

    def record(self, rec: CallRecord, *, reservation: Reservation | None = None) -> None:
        """Store a finished call, add its cost to its day and end ``reservation`` in the same step."""

    def daily_cost(self, day: date | None = None) -> Decimal:
        """What was spent on a UTC day (today by default), without open reservations."""

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Call counts, success rate, cost and duration percentiles, overall and ``by_model``."""

    def by_model(self) -> dict[str, dict[str, Any]]:
        """The ``stats()`` counters of each model."""

    def records(self, limit: int | None = None) -> list[CallRecord]:
        """The most recent records, newest first."""


def check_ttl(_inst: object, _attr: attrs.Attribute[float | None], value: float | None) -> None:
    """Reject a non-positive reservation TTL (``None``, no TTL, is fine)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        msg = f"reservation_ttl must be > 0 seconds or None, got {value!r}"
        raise ValueError(msg)


def _to_budget(value: Decimal | None) -> Decimal | None:
    return None if value is None else quantize_usd(value, name="daily_budget_usd")


@attrs.define
class JournalLedger:
    """The :class:`Ledger` view of a journal: what a client (or an app) asks about money.

    Thread-safe when the journal is (every journal is).

    Args:
        journal: Where jobs, holds and records live.
        daily_budget_usd: Cap on each UTC day's spend plus open holds; ``None`` for no cap.
        clock: Returns the current aware datetime; decides "today" for budgets and records.
        reservation_ttl: Seconds after which an open hold lapses by itself; ``None`` never.
    """

    _journal: Journal = attrs.field(alias="journal")
    daily_budget_usd: Decimal | None = attrs.field(default=None, converter=_to_budget, kw_only=True)
    clock: Callable[[], datetime] = attrs.field(default=utc_now, kw_only=True)
    reservation_ttl: float | None = attrs.field(default=DEFAULT_RESERVATION_TTL, kw_only=True, validator=check_ttl)
    # Ids of holds whose Reservation was garbage-collected; appended from finalizers without a
    # lock (deque.append is atomic) and released on the next call, never inside a finalizer.
    _collected: deque[str] = attrs.field(factory=deque, init=False, repr=False)

    @property
    def journal(self) -> Journal:
        """The journal this ledger reads."""
        return self._journal

    def _drain_collected(self) -> None:
        while self._collected:
            self._journal.release(self._collected.popleft())

    def _handle(self, amount: Decimal, model_id: str | None, rid: str) -> Reservation:
        return Reservation(amount, model_id, rid, owner=self, end=self._end, on_collect=self._collected.append)

    def _end(self, rid: str) -> None:
        self._journal.release(rid)

    # -- budget --

    def reserve(self, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """Hold ``amount`` of today's budget for work about to run; atomic across threads (and processes, when shared).

        The hold is granted only if today's spend + every open hold + ``amount`` stays
        within ``daily_budget_usd`` (always granted without a budget).

        Args:
            amount: The estimated cost (``Decimal``).
            model_id: The model it is for (named in the error).

        Returns:
            The :class:`Reservation`; end it with ``record(rec, reservation=...)``,
            ``settle()``, ``release()`` or a ``with`` block.

        Raises:
            BudgetExceededError: The hold would take the day over budget; nothing is held.
            TypeError, ValueError: ``amount`` is not a valid amount (floats are refused).
        """
        quantized = quantize_usd(amount)
        self._drain_collected()
        now = self.clock()
        expires = None if self.reservation_ttl is None else now + timedelta(seconds=self.reservation_ttl)
        rid = new_reservation_id()
        self._journal.hold(rid, quantized, budget=self.daily_budget_usd, model_id=model_id, expires_at=expires, now=now)
        return self._handle(quantized, model_id, rid)

    def adopt(self, reservation_id: str, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """A handle on a hold made earlier, possibly by another process, so that this one can end it.

        Ending a hold that already ended or lapsed does nothing.
        """
        return self._handle(quantize_usd(amount), model_id, reservation_id)

    def reserved(self) -> Decimal:
        """The total held now by open reservations and by jobs still being submitted."""
        self._drain_collected()
        return self._journal.reserved(now=self.clock())

    # -- recording --

    def record(self, rec: CallRecord, *, reservation: Reservation | None = None) -> None:
        """Store a finished call not tied to a journaled job; its cost counts on its UTC day.

        Args:
            rec: The finished call.
            reservation: Its hold, ended in the same atomic step as the cost is added.

        Raises:
            ValueError: ``reservation`` was made by another ledger.
        """
        live = reservation is not None and reservation._claim_for(self, rec.cost_usd)
        self._drain_collected()
        self._journal.add_record(rec, hold_id=reservation.id if live and reservation is not None else None)

    # -- queries --

    def daily_cost(self, day: date | None = None) -> Decimal:
        """What was spent on a UTC day (today per ``clock`` by default), open holds not included.

        Args:
            day: A ``date`` (or aware ``datetime``, taken as its UTC day).

        Raises:
            ValueError: ``day`` is a naive datetime.
        """
        return self._journal.daily_cost(utc_day(self.clock() if day is None else day))

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Counters overall (or of one model) and per model.

        Returns:
            ``total_calls``, ``successes``, ``failures``, ``success_rate`` (``None`` with no
            calls), ``total_cost_usd`` (``Decimal``, from jobs), ``avg_duration_ms``,
            ``p50_duration_ms``, ``p95_duration_ms`` (over recent calls) and ``by_model``.
        """
        return self._journal.stats(model)

    def by_model(self) -> dict[str, dict[str, Any]]:
        """The ``stats()`` counters of each model seen."""
        per_model: dict[str, dict[str, Any]] = self.stats()["by_model"]
        return per_model

    def records(self, limit: int | None = None) -> list[CallRecord]:
        """The retained records, newest first.

        Raises:
            ValueError: ``limit`` is negative.
        """
        if limit is not None and limit < 0:
            msg = f"limit must be >= 0, got {limit}"
            raise ValueError(msg)
        return self._journal.records(limit)

    def close(self) -> None:
        """Close the journal's connections."""
        self._journal.close()


class CostLedger(JournalLedger):
    """An in-memory ledger for one process: recent records, running aggregates, budget holds.

    Thread-safe; every query is O(number of models), never O(number of records).
    Memory is bounded (see :class:`~falwrap.backends.memory.MemoryJournal`).

    Args:
        max_records: How many recent records :meth:`records` keeps (a ring buffer).
        clock: Returns the current aware datetime; decides "today". Inject one in tests.
        daily_budget_usd: Cap on each UTC day's spend plus open holds; ``None`` for no cap.
        reservation_ttl: Seconds after which an open hold lapses by itself; ``None`` never.
        duration_window: How many recent durations p50/p95 are computed from, per scope.
        max_days: How many UTC days of daily totals to keep.
        max_jobs: How many finished jobs (and their results) to keep.
        metrics: Deprecated and ignored: metrics are observers of the client, not the ledger.

    Raises:
        TypeError, ValueError: An argument is out of range (e.g. a float budget).
    """

    def __init__(
        self,
        max_records: int = 10_000,
        clock: Callable[[], datetime] = utc_now,
        daily_budget_usd: Decimal | None = None,
        *,
        reservation_ttl: float | None = DEFAULT_RESERVATION_TTL,
        duration_window: int = 1000,
        max_days: int = 400,
        max_jobs: int = 10_000,
        metrics: bool | None = None,
    ) -> None:
        from falwrap.backends.memory import MemoryJournal

        if metrics is not None:
            warnings.warn(
                "CostLedger(metrics=...) is deprecated and ignored: FalClient reports every call to its "
                "observers (the log line and Prometheus metrics), the ledger only stores.",
                DeprecationWarning,
                stacklevel=2,
            )
        journal = MemoryJournal(
            max_records=max_records, max_jobs=max_jobs, max_days=max_days, duration_window=duration_window
        )
        super().__init__(journal, daily_budget_usd=daily_budget_usd, clock=clock, reservation_ttl=reservation_ttl)

    @property
    def max_records(self) -> int:
        """How many recent records are kept."""
        return int(self.journal.max_records)  # type: ignore[attr-defined]
