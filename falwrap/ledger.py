"""The cost ledger: what each call cost, daily spend, stats, and budget reservations.

Money is :class:`~decimal.Decimal` quantised to the micro-dollar (``Decimal("0.000001")``),
kept internally as integer micro-dollars so sums are exact and cheap; it is never a float.
Days are UTC days. Every query reads running aggregates, never the stored records, so
``daily_cost()`` and ``stats()`` cost the same with ten records or ten million.

How a call uses the ledger (the client does this)::

    with ledger.reserve(estimate, model_id=model) as hold:   # BudgetExceededError here, before any HTTP
        ...                                                   # the call
        ledger.record(CallRecord(...), reservation=hold)      # adds the actual cost, ends the hold

Spend is added **only** by :meth:`Ledger.record`; a :class:`Reservation` only ever
*holds* budget. ``record(rec, reservation=hold)`` adds the record's cost and ends the
hold in one atomic step, so spend is never counted twice and never missing.
``hold.settle(actual)`` and ``hold.release()`` only end the hold (use them when a
call is not recorded, or record first and settle after: between the two the cost is
briefly counted twice, which can only refuse a call, never overspend).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from falwrap import metrics as _metrics
from falwrap.errors import BudgetExceededError

__all__ = [
    "MICRO_DOLLAR",
    "CallRecord",
    "CostLedger",
    "Ledger",
    "Reservation",
    "format_call_log",
    "log_call",
    "quantize_usd",
]

#: The ledger's unit of account: every amount is rounded to a millionth of a dollar.
MICRO_DOLLAR = Decimal("0.000001")
_MICROS = 1_000_000

#: Where call lines go; applications configure this logger, not the root.
logger = logging.getLogger("falwrap")

#: Seconds an open hold lives by default: longer than the longest call (a 10-minute video
#: deadline), short enough that a hung or crashed caller frees the budget the same hour.
DEFAULT_RESERVATION_TTL: float | None = 900.0

ReservationState = Literal["held", "settled", "released"]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime: the ledgers' default clock."""
    return datetime.now(timezone.utc)


def quantize_usd(value: Decimal | int, *, name: str = "amount") -> Decimal:
    """Validate an amount of money and round it to the micro-dollar (banker's rounding).

    Args:
        value: A :class:`~decimal.Decimal` or ``int`` number of dollars.
        name: The argument's name, for the error message.

    Returns:
        The amount as a ``Decimal`` with exactly six decimal places.

    Raises:
        TypeError: ``value`` is a float (it cannot hold money exactly) or not a number.
        ValueError: ``value`` is negative, NaN or infinite.
    """
    if type(value) is Decimal and value.is_finite() and value >= 0:
        # The common case (a valid Decimal) skips the copy and the checks below.
        try:
            return value.quantize(MICRO_DOLLAR, rounding=ROUND_HALF_EVEN)
        except InvalidOperation:
            pass  # too large: reported below
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        msg = f"{name} must be a Decimal (or int) number of dollars, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        msg = f"{name} must be a finite, non-negative number of dollars, got {value!r}"
        raise ValueError(msg)
    try:
        return amount.quantize(MICRO_DOLLAR, rounding=ROUND_HALF_EVEN)
    except InvalidOperation as exc:
        msg = f"{name} is too large to be an amount of money: {value!r}"
        raise ValueError(msg) from exc


def display_usd(amount: Decimal) -> Decimal:
    """The same amount with trailing zeros trimmed to cents (``1.000000`` -> ``1.00``) for messages."""
    cents = amount.quantize(Decimal("0.01"))
    return cents if cents == amount else amount.normalize()


def to_micros(amount: Decimal) -> int:
    """Integer micro-dollars of an already quantised amount (internal, shared with RedisLedger)."""
    return int(amount.scaleb(6))


def from_micros(micros: int) -> Decimal:
    """The ``Decimal`` dollars (six places) of an integer number of micro-dollars."""
    return Decimal(micros).scaleb(-6)


def utc_day(moment: datetime | date) -> date:
    """The UTC calendar day of an aware datetime, or a ``date`` unchanged.

    Raises:
        ValueError: ``moment`` is a naive datetime (its day would be a guess).
    """
    if isinstance(moment, datetime):
        if moment.utcoffset() is None:
            msg = f"a naive datetime has no UTC day; give it a timezone: {moment!r}"
            raise ValueError(msg)
        return moment.astimezone(timezone.utc).date()
    return moment


# --- CallRecord ----------------------------------------------------------------------------------


def _to_utc(value: datetime) -> datetime:
    # Normalise aware datetimes so every record's day is its UTC day; the validator rejects the rest.
    if isinstance(value, datetime) and value.tzinfo is timezone.utc:
        return value
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(timezone.utc)
    return value


def _check_timestamp(_inst: object, _attr: attrs.Attribute[datetime], value: object) -> None:
    if not isinstance(value, datetime):
        msg = f"timestamp must be a datetime, got {type(value).__name__}"
        raise TypeError(msg)
    if value.utcoffset() is None:
        msg = f"timestamp must be timezone-aware (UTC), got naive {value!r}"
        raise ValueError(msg)


def _to_cost(value: Decimal) -> Decimal:
    return quantize_usd(value, name="cost_usd")


def _check_duration(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"duration_ms must be an int or float, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(value) or value < 0:
        msg = f"duration_ms must be finite and non-negative, got {value!r}"
        raise ValueError(msg)


_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A private copy behind a read-only view: a frozen record must not change under the ledger.
    # Most records have none; sharing one empty view keeps 10,000 retained records small.
    return MappingProxyType(dict(value)) if value else _NO_METADATA


_optional_str = attrs.validators.optional(attrs.validators.instance_of(str))


def _check_model_id(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        msg = f"model_id must be a non-empty str, got {value!r}"
        raise TypeError(msg) if not isinstance(value, str) else ValueError(msg)


@attrs.frozen
class CallRecord:
    """One finished call: what ran, when, how long, what it cost and how it ended.

    Immutable and safe to share between threads.

    Args:
        timestamp: When the call finished; must be timezone-aware, stored in UTC.
        model_id: The fal endpoint, e.g. ``"fal-ai/flux/dev"``.
        operation: What the client did: ``"generate"``, ``"upscale"``, ``"video"``...
        duration_ms: Wall time of the call in milliseconds.
        cost_usd: What the call cost, a ``Decimal``; rounded to the micro-dollar.
        success: Whether the call produced its result.
        error_code: The failure's ``FalApiError.error_code`` (``None`` on success).
        request_id: fal's queue request id, when one was assigned.
        metadata: Anything else worth keeping (JSON-serialisable for RedisLedger); stored read-only.

    Raises:
        TypeError: A field has the wrong type (notably a float ``cost_usd``).
        ValueError: A naive ``timestamp``, or a negative/non-finite cost or duration.
    """

    timestamp: datetime = attrs.field(converter=_to_utc, validator=_check_timestamp)
    model_id: str = attrs.field(validator=_check_model_id)
    operation: str = attrs.field(validator=attrs.validators.instance_of(str))
    duration_ms: float = attrs.field(validator=_check_duration)
    cost_usd: Decimal = attrs.field(converter=_to_cost)
    success: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    error_code: str | None = attrs.field(default=None, validator=_optional_str)
    request_id: str | None = attrs.field(default=None, validator=_optional_str)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, hash=False)

    @property
    def day(self) -> date:
        """The UTC day this call counts against."""
        return self.timestamp.date()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO timestamp, cost as a string); :meth:`from_dict` reverses it."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "model_id": self.model_id,
            "operation": self.operation,
            "duration_ms": self.duration_ms,
            "cost_usd": str(self.cost_usd),
            "success": self.success,
            "error_code": self.error_code,
            "request_id": self.request_id,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRecord:
        """Rebuild a record from :meth:`to_dict` output.

        Raises:
            KeyError: A required field is missing.
            TypeError, ValueError: A field does not validate.
        """
        return cls(
            timestamp=datetime.fromisoformat(data["timestamp"]),
            model_id=data["model_id"],
            operation=data["operation"],
            duration_ms=data["duration_ms"],
            cost_usd=Decimal(data["cost_usd"]),
            success=data["success"],
            error_code=data.get("error_code"),
            request_id=data.get("request_id"),
            metadata=data.get("metadata") or {},
        )


# --- The log line both ledgers write -------------------------------------------------------------

_FOUR_PLACES = Decimal("0.0001")


def _format_cost(cost: Decimal) -> str:
    # Cents-and-below reads best with four places ($0.0250); keep more only when they carry money.
    four = cost.quantize(_FOUR_PLACES)
    return str(four) if four == cost else f"{cost.normalize():f}"


def format_call_log(rec: CallRecord) -> tuple[str, tuple[object, ...], dict[str, Any]]:
    """The log template, its arguments and structured ``extra`` fields for one call.

    The rendered message reads ``[falwrap] generate fal-ai/flux/dev SUCCESS (3512 ms, $0.0250)``
    or ``[falwrap] generate fal-ai/flux/dev FAILED RATE_LIMIT (120 ms, $0.0000)``.

    Args:
        rec: The finished call.

    Returns:
        ``(template, args, extra)`` ready for ``logger.info(template, *args, extra=extra)``.
    """
    outcome = "SUCCESS" if rec.success else f"FAILED {rec.error_code or 'UNKNOWN_ERROR'}"
    args = (rec.operation, rec.model_id, outcome, round(rec.duration_ms), _format_cost(rec.cost_usd))
    extra = {
        "falwrap_operation": rec.operation,
        "falwrap_model": rec.model_id,
        "falwrap_success": rec.success,
        "falwrap_error_code": rec.error_code,
        "falwrap_duration_ms": rec.duration_ms,
        "falwrap_cost_usd": str(rec.cost_usd),
        "falwrap_request_id": rec.request_id,
    }
    return "[falwrap] %s %s %s (%d ms, $%s)", args, extra


def log_call(rec: CallRecord, log: logging.Logger | None = None) -> None:
    """Write the one INFO line for a recorded call (see :func:`format_call_log`).

    Args:
        rec: The finished call.
        log: Where to write; the ``falwrap`` logger by default.
    """
    log = log or logger
    if log.isEnabledFor(logging.INFO):
        template, args, extra = format_call_log(rec)
        log.info(template, *args, extra=extra)


def after_record(rec: CallRecord, *, metrics: bool) -> None:
    """What every ledger does once a record is stored: the log line, then Prometheus (internal)."""
    log_call(rec)
    if metrics:
        _metrics.observe_call(rec)


# --- Stats helpers shared by both ledgers --------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted data by linear interpolation (numpy's default), or ``None``.

    For 1..100 this gives p50 = 50.5 and p95 = 95.05.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    low = float(sorted_values[lo])
    return low + (float(sorted_values[hi]) - low) * (pos - lo)


def summarize(
    calls: int, successes: int, cost_micros: int, duration_sum: float, sorted_durations: Sequence[float]
) -> dict[str, Any]:
    """The per-scope stats dict (everything ``stats()`` returns except ``by_model``); internal."""
    return {
        "total_calls": calls,
        "successes": successes,
        "failures": calls - successes,
        "success_rate": successes / calls if calls else None,
        "total_cost_usd": from_micros(cost_micros),
        "avg_duration_ms": duration_sum / calls if calls else None,
        "p50_duration_ms": percentile(sorted_durations, 0.50),
        "p95_duration_ms": percentile(sorted_durations, 0.95),
    }


# --- Reservation ---------------------------------------------------------------------------------


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


class HoldIssuer:
    """What both ledgers share about issuing :class:`Reservation` handles on their holds.

    A subclass keeps the holds; it provides ``_release_hold(rid)`` and a
    ``_collected`` deque of ids whose handles were garbage-collected.
    """

    __slots__ = ()

    _collected: deque[str]

    def _release_hold(self, rid: str) -> None:
        raise NotImplementedError

    def _handle(self, amount: Decimal, model_id: str | None, rid: str) -> Reservation:
        return Reservation(amount, model_id, rid, owner=self, end=self._release_hold, on_collect=self._collected.append)

    def adopt(self, reservation_id: str, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """A handle on a hold made earlier, possibly by another process, so that this one can end it.

        For jobs submitted in one request or process and settled in another: the
        ``JobHandle`` carries the hold's id. Ending a hold that already ended or
        lapsed does nothing.

        Args:
            reservation_id: ``Reservation.id`` of the original hold.
            amount: Its amount (informational).
            model_id: Its model, if known.
        """
        return self._handle(quantize_usd(amount), model_id, reservation_id)


# --- The protocol ------------------------------------------------------------------------------


@runtime_checkable
class Ledger(Protocol):
    """What the client needs from a ledger; :class:`CostLedger` and ``RedisLedger`` both provide it.

    Every method is thread-safe.
    """

    @property
    def daily_budget_usd(self) -> Decimal | None:
        """Today's spending cap, or ``None`` for no cap."""

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


# --- CostLedger --------------------------------------------------------------------------------


@attrs.define
class _DurationWindow:
    """The last ``size`` durations, kept both in arrival order and sorted (so percentiles are O(1))."""

    size: int
    order: deque[float] = attrs.field(factory=deque)
    ordered: list[float] = attrs.field(factory=list)

    def add(self, value: float) -> None:
        if len(self.order) >= self.size:
            oldest = self.order.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, oldest)]
        self.order.append(value)
        bisect.insort(self.ordered, value)


@attrs.define
class _Totals:
    """Running counters of one scope (all calls, or one model)."""

    window: _DurationWindow
    calls: int = 0
    successes: int = 0
    cost_micros: int = 0
    duration_sum: float = 0.0

    def add(self, success: bool, cost_micros: int, duration: float) -> None:
        self.calls += 1
        self.successes += success
        self.cost_micros += cost_micros
        self.duration_sum += duration
        self.window.add(duration)

    def summary(self) -> dict[str, Any]:
        return summarize(self.calls, self.successes, self.cost_micros, self.duration_sum, self.window.ordered)


def check_ttl(_inst: object, _attr: attrs.Attribute[float | None], value: float | None) -> None:
    """Reject a non-positive reservation TTL (``None``, no TTL, is fine); shared with RedisLedger."""
    if value is not None and not value > 0:
        msg = f"reservation_ttl must be > 0 seconds or None, got {value!r}"
        raise ValueError(msg)


def _to_budget(value: Decimal | None) -> Decimal | None:
    return None if value is None else quantize_usd(value, name="daily_budget_usd")


@attrs.define
class CostLedger(HoldIssuer):
    """An in-memory ledger for one process: recent records, running aggregates, budget holds.

    Thread-safe: one lock guards all state, and every query is O(number of models),
    never O(number of records). Memory is bounded: the newest ``max_records`` records,
    ``max_days`` days of daily totals, and ``duration_window`` durations per scope.
    Stats (``total_calls``, ``total_cost_usd``...) cover every call since the ledger was
    made, not only the retained records.

    Args:
        max_records: How many recent records :meth:`records` keeps (a ring buffer).
        clock: Returns the current aware datetime; decides "today" for :meth:`daily_cost`,
            :meth:`reserve` and reservation expiry. Inject one in tests.
        daily_budget_usd: Cap on each UTC day's spend plus open holds; ``None`` for no cap.
        reservation_ttl: Seconds after which an open hold lapses by itself (a call that
            hangs for ever must not block the budget for ever); ``None`` never lapses.
        duration_window: How many recent durations p50/p95 are computed from, per scope.
        max_days: How many UTC days of daily totals to keep (the oldest go first).
        metrics: Update the Prometheus metrics of :mod:`falwrap.metrics` on each record
            (a no-op when ``prometheus_client`` is not installed).

    Raises:
        TypeError, ValueError: An argument is out of range (e.g. a float budget).
    """

    max_records: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    clock: Callable[[], datetime] = attrs.field(default=utc_now)
    daily_budget_usd: Decimal | None = attrs.field(default=None, converter=_to_budget)
    reservation_ttl: float | None = attrs.field(default=DEFAULT_RESERVATION_TTL, kw_only=True, validator=check_ttl)
    duration_window: int = attrs.field(default=1000, kw_only=True, validator=attrs.validators.gt(0))
    max_days: int = attrs.field(default=400, kw_only=True, validator=attrs.validators.gt(0))
    metrics: bool = attrs.field(default=True, kw_only=True)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _records: deque[CallRecord] = attrs.field(init=False, repr=False)
    _days: dict[date, list[int]] = attrs.field(factory=dict, init=False, repr=False)
    _total: _Totals = attrs.field(init=False, repr=False)
    _models: dict[str, _Totals] = attrs.field(factory=dict, init=False, repr=False)
    _holds: dict[str, tuple[int, datetime | None]] = attrs.field(factory=dict, init=False, repr=False)
    _reserved_micros: int = attrs.field(default=0, init=False, repr=False)
    # Ids of holds whose Reservation was garbage-collected; appended from finalizers without the
    # lock (deque.append is atomic) and drained under it, so a GC inside a locked section is safe.
    _collected: deque[str] = attrs.field(factory=deque, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._records = deque(maxlen=self.max_records)
        self._total = _Totals(_DurationWindow(self.duration_window))

    # -- recording --

    def record(self, rec: CallRecord, *, reservation: Reservation | None = None) -> None:
        """Store a finished call and add its cost to its UTC day; end ``reservation`` atomically.

        Args:
            rec: The finished call; its ``timestamp`` decides the day it counts against.
            reservation: The call's hold, if it has one. Its hold ends in the same locked
                step that adds ``rec.cost_usd``, so spend is counted exactly once. If the hold
                already ended (released, lapsed), the cost is still recorded.

        Raises:
            ValueError: ``reservation`` was made by another ledger.
        """
        live = reservation is not None and reservation._claim_for(self, rec.cost_usd)
        cost = to_micros(rec.cost_usd)
        day = rec.timestamp.date()
        with self._lock:
            self._records.append(rec)
            totals = self._days.get(day)
            if totals is None:
                totals = self._days[day] = [0, 0, 0]
                if len(self._days) > self.max_days:
                    del self._days[min(self._days)]
            totals[0] += 1
            totals[1] += rec.success
            totals[2] += cost
            self._total.add(rec.success, cost, rec.duration_ms)
            model = self._models.get(rec.model_id)
            if model is None:
                model = self._models[rec.model_id] = _Totals(_DurationWindow(self.duration_window))
            model.add(rec.success, cost, rec.duration_ms)
            if live and reservation is not None:
                self._end_hold(reservation.id)
        after_record(rec, metrics=self.metrics)

    # -- queries --

    def daily_cost(self, day: date | None = None) -> Decimal:
        """What was spent on a UTC day, from the running totals (open holds not included).

        Args:
            day: A ``date`` (or aware ``datetime``, taken as its UTC day); today per ``clock`` by default.

        Returns:
            The day's spend as a ``Decimal`` with six places (``Decimal("0.000000")`` for no calls).

        Raises:
            ValueError: ``day`` is a naive datetime.
        """
        key = utc_day(self.clock() if day is None else day)
        with self._lock:
            totals = self._days.get(key)
            return from_micros(totals[2] if totals else 0)

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Counters since the ledger was made, overall (or of one model) and per model.

        Args:
            model: Only this model's counters (``by_model`` then holds just that model).

        Returns:
            A dict with ``total_calls``, ``successes``, ``failures``, ``success_rate``
            (``None`` with no calls), ``total_cost_usd`` (``Decimal``), ``avg_duration_ms``,
            ``p50_duration_ms`` and ``p95_duration_ms`` (over the last ``duration_window``
            calls of the scope, linear interpolation; ``None`` with no calls), and
            ``by_model``: model id -> a dict of the same counters.
        """
        with self._lock:
            if model is None:
                top = self._total.summary()
                per_model = {name: t.summary() for name, t in self._models.items()}
            else:
                found = self._models.get(model)
                top = found.summary() if found else summarize(0, 0, 0, 0.0, ())
                per_model = {model: top} if found else {}
        return {**top, "by_model": per_model}

    def by_model(self) -> dict[str, dict[str, Any]]:
        """The ``stats()`` counters of each model seen (see :meth:`stats`)."""
        per_model: dict[str, dict[str, Any]] = self.stats()["by_model"]
        return per_model

    def records(self, limit: int | None = None) -> list[CallRecord]:
        """The retained records, newest first.

        Args:
            limit: At most this many (the newest); all retained (up to ``max_records``) by default.

        Raises:
            ValueError: ``limit`` is negative.
        """
        if limit is not None and limit < 0:
            msg = f"limit must be >= 0, got {limit}"
            raise ValueError(msg)
        with self._lock:
            return list(itertools.islice(reversed(self._records), limit))

    # -- budget --

    def reserve(self, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """Hold ``amount`` of today's budget for a call about to run; atomic across threads.

        With a budget, the hold is granted only if today's spend + every open hold +
        ``amount`` stays within ``daily_budget_usd``. Without one it is always granted
        (holds are still tracked, so :meth:`reserved` shows calls in flight). Open holds
        count against whatever day it is when the next reservation is checked.

        Args:
            amount: The call's estimated cost (``Decimal``).
            model_id: The model the call is for (named in the error).

        Returns:
            The :class:`Reservation`; end it with ``record(rec, reservation=...)``,
            ``settle()``, ``release()`` or a ``with`` block.

        Raises:
            BudgetExceededError: The hold would take the day over budget; nothing is held.
            TypeError, ValueError: ``amount`` is not a valid amount (floats are refused).
        """
        micros = to_micros(quantize_usd(amount))
        now = self.clock()
        today = utc_day(now)
        expires = None if self.reservation_ttl is None else now + timedelta(seconds=self.reservation_ttl)
        rid = new_reservation_id()
        with self._lock:
            self._sweep(now)
            if self.daily_budget_usd is not None:
                budget = to_micros(self.daily_budget_usd)
                totals = self._days.get(today)
                spent = totals[2] if totals else 0
                if spent + self._reserved_micros + micros > budget:
                    raise BudgetExceededError(
                        spent=display_usd(from_micros(spent)),
                        reserved=display_usd(from_micros(self._reserved_micros)),
                        estimate=display_usd(from_micros(micros)),
                        budget=display_usd(self.daily_budget_usd),
                        model_id=model_id,
                    )
            self._holds[rid] = (micros, expires)
            self._reserved_micros += micros
        return self._handle(from_micros(micros), model_id, rid)

    def reserved(self) -> Decimal:
        """The total held by open reservations (lapsed and collected ones are dropped first)."""
        now = self.clock()
        with self._lock:
            self._sweep(now)
            return from_micros(self._reserved_micros)

    def _release_hold(self, rid: str) -> None:
        with self._lock:
            self._end_hold(rid)

    def _end_hold(self, rid: str) -> None:
        # Caller holds the lock. A hold may already be gone (lapsed by TTL): nothing to do then.
        hold = self._holds.pop(rid, None)
        if hold is not None:
            self._reserved_micros -= hold[0]

    def _sweep(self, now: datetime) -> None:
        # Caller holds the lock. Holds in flight are few (one per concurrent call), so a scan is cheap.
        while self._collected:
            self._end_hold(self._collected.popleft())
        if self.reservation_ttl is not None and self._holds:
            for rid in [rid for rid, (_, expires) in self._holds.items() if expires is not None and expires <= now]:
                self._end_hold(rid)
