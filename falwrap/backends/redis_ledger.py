"""RedisLedger: the :class:`~falwrap.ledger.Ledger` interface with its state in Redis, shared by processes.

Every process (gunicorn workers, celery tasks, cron scripts) that builds a
``RedisLedger`` on the same Redis and namespace sees one daily spend, one set of
budget holds and one set of stats. Writes are single Lua scripts, so concurrent
processes never lose an increment and a budget check-and-hold is atomic.

Keys (``ns`` is the namespace; for Redis Cluster put it in braces, ``{falwrap}``,
so every key lands in one slot)::

    ns:day:YYYY-MM-DD      hash  calls, successes, cost_micros     expires after day_ttl (35 days)
    ns:totals              hash  calls, successes, cost_micros, duration_ms, and
                                 m:<model>:<counter> for each model (lifetime)
    ns:records             list  JSON records, newest first, capped at max_records (LPUSH + LTRIM)
    ns:durations           list  recent durations (ms), capped at duration_window
    ns:durations:<model>   list  the same per model
    ns:holds               hash  reservation id -> micro-dollars held
    ns:holds:expiry        zset  reservation id -> expiry (ms, Redis clock)

Money is stored as integer micro-dollars, never floats.

Clocks: a record counts against its own timestamp's UTC day; "today" for
``daily_cost()`` and for the budget check in ``reserve()`` comes from the injected
*client* clock (UTC), so keep hosts NTP-synchronised. Reservation expiry uses the
*Redis* clock (``TIME``), so a host with a skewed clock cannot expire other
processes' holds early; a crashed process's holds lapse after ``reservation_ttl``.

redis-py is imported only for type checking: it is needed at run time only to
build the client you pass in (``pip install 'falwrap[redis]'``).
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import attrs

from falwrap.errors import BackendUnavailableError, BudgetExceededError
from falwrap.ledger import (
    CallRecord,
    HoldIssuer,
    Reservation,
    after_record,
    display_usd,
    from_micros,
    new_reservation_id,
    quantize_usd,
    summarize,
    to_micros,
    utc_day,
    utc_now,
)

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

__all__ = ["RedisLedger"]

#: Daily totals outlive the month they describe, then clean themselves up.
DEFAULT_DAY_TTL = 35 * 24 * 3600

# Adds one record everywhere it counts and, when given, ends its hold: one atomic step.
# Amounts go through as the caller's strings (never Lua numbers, whose %.14g formatting
# would turn large integers into "1e+15").
_RECORD = """
-- KEYS: day, totals, records, durations, model durations, holds, holds expiry, recorded-request marker
-- ARGV: cost_micros, success 0/1, duration_ms, model_id, record JSON, max_records, window, day_ttl, hold id,
--       request id of a success ('' otherwise)
if ARGV[9] ~= '' then
  redis.call('HDEL', KEYS[6], ARGV[9])
  redis.call('ZREM', KEYS[7], ARGV[9])
end
-- A job's success is counted once, however many processes fetch its result.
if ARGV[10] ~= '' and not redis.call('SET', KEYS[8], '1', 'NX', 'EX', ARGV[8]) then
  return 0
end
local m = 'm:' .. ARGV[4] .. ':'
redis.call('HINCRBY', KEYS[1], 'calls', 1)
redis.call('HINCRBY', KEYS[1], 'successes', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'cost_micros', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[8])
for _, p in ipairs({'', m}) do
  redis.call('HINCRBY', KEYS[2], p .. 'calls', 1)
  redis.call('HINCRBY', KEYS[2], p .. 'successes', ARGV[2])
  redis.call('HINCRBY', KEYS[2], p .. 'cost_micros', ARGV[1])
  redis.call('HINCRBYFLOAT', KEYS[2], p .. 'duration_ms', ARGV[3])
end
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('LPUSH', KEYS[4], ARGV[3])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
redis.call('LPUSH', KEYS[5], ARGV[3])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[7]) - 1)
return 1
"""

# Drops lapsed holds, then returns the micro-dollars still held. Shared prefix of both hold scripts.
_SWEEP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  reserved = reserved + tonumber(v)
end
"""

_RESERVED = (
    """
-- KEYS: holds, holds expiry
"""
    + _SWEEP
    + """
return reserved
"""
)

_RESERVE = (
    """
-- KEYS: holds, holds expiry, day
-- ARGV: hold id, micro-dollars, budget micro-dollars ('' for none), ttl ms
"""
    + _SWEEP
    + """
local spent = tonumber(redis.call('HGET', KEYS[3], 'cost_micros') or '0')
if ARGV[3] ~= '' and spent + reserved + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  return {0, spent, reserved}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
-- The bookkeeping keys live as long as the latest hold, whichever process set which TTL.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]) + 60000)
redis.call('PEXPIREAT', KEYS[2], tonumber(last[2]) + 60000)
return {1, spent, reserved}
"""
)


def _text(value: bytes | str) -> str:
    # Works whether or not the client was built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


def _check_namespace(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        msg = f"namespace must be a non-empty str, got {value!r}"
        raise ValueError(msg)


def _to_budget(value: Decimal | None) -> Decimal | None:
    return None if value is None else quantize_usd(value, name="daily_budget_usd")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _typed_redis_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn redis-py's errors into :class:`~falwrap.errors.BackendUnavailableError` (a typed, friendly error)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        from redis.exceptions import RedisError

        try:
            return method(*args, **kwargs)
        except RedisError as exc:
            msg = (
                f"The shared ledger could not reach Redis ({type(exc).__name__}: {exc}). "
                "Check that Redis is running and FALWRAP_REDIS_URL is right; nothing was sent to fal."
            )
            raise BackendUnavailableError(msg) from exc

    return wrapper


@attrs.define
class RedisLedger(HoldIssuer):
    """A ledger whose records, totals and budget holds live in Redis, shared by many processes.

    Same interface and semantics as :class:`~falwrap.ledger.CostLedger` (see
    :class:`~falwrap.ledger.Ledger`): ``record(rec, reservation=hold)`` adds the cost and
    ends the hold in one Lua script; ``settle()``/``release()`` only end holds. Thread-safe
    and process-safe: it keeps no shared state of its own beyond the redis-py client,
    which is thread-safe.

    Args:
        redis: A redis-py ``Redis`` client (bytes or decoded responses both work).
        namespace: Prefix of every key; processes sharing it share the ledger.
        daily_budget_usd: Cap on each UTC day's spend plus open holds; ``None`` for no cap.
            It is this instance's setting: give every process the same value.
        max_records: How many recent records the shared list keeps.
        clock: Returns the current aware datetime; decides "today" (see the module docstring).
        reservation_ttl: Seconds after which a hold lapses by itself (Redis clock), so a
            crashed process's reservations free the budget; default 15 minutes. Always set:
            without it a crashed process would hold budget for ever.
        day_ttl: Seconds each day's totals are kept (default 35 days).
        duration_window: How many recent durations p50/p95 use, overall and per model.
        metrics: Update this process's Prometheus metrics on each record.

    Raises:
        TypeError, ValueError: An argument is out of range.
    """

    redis: Redis = attrs.field()
    namespace: str = attrs.field(validator=_check_namespace)
    daily_budget_usd: Decimal | None = attrs.field(default=None, kw_only=True, converter=_to_budget)
    max_records: int = attrs.field(default=10_000, kw_only=True, validator=attrs.validators.gt(0))
    clock: Callable[[], datetime] = attrs.field(default=utc_now, kw_only=True)
    reservation_ttl: float = attrs.field(default=900.0, kw_only=True, validator=attrs.validators.gt(0.0))
    day_ttl: int = attrs.field(default=DEFAULT_DAY_TTL, kw_only=True, validator=attrs.validators.gt(0))
    duration_window: int = attrs.field(default=1000, kw_only=True, validator=attrs.validators.gt(0))
    metrics: bool = attrs.field(default=True, kw_only=True)
    # Ids of holds whose Reservation was garbage-collected. Finalizers only append (atomic); the
    # next ledger call releases them, because a network call from inside GC could deadlock redis-py.
    _collected: deque[str] = attrs.field(factory=deque, init=False, repr=False)
    _record_script: Script = attrs.field(init=False, repr=False)
    _reserve_script: Script = attrs.field(init=False, repr=False)
    _reserved_script: Script = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._record_script = self.redis.register_script(_RECORD)
        self._reserve_script = self.redis.register_script(_RESERVE)
        self._reserved_script = self.redis.register_script(_RESERVED)

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def _day_key(self, day: date) -> str:
        return self._key("day", day.isoformat())

    def _hold_keys(self) -> list[str]:
        return [self._key("holds"), self._key("holds", "expiry")]

    # -- recording --

    @_typed_redis_errors
    def record(self, rec: CallRecord, *, reservation: Reservation | None = None) -> None:
        """Store a finished call in Redis and add its cost to its UTC day; end ``reservation`` atomically.

        Args:
            rec: The finished call; its ``timestamp`` decides the day it counts against.
                Its ``metadata`` must be JSON-serialisable (other values are stored as ``str``).
            reservation: The call's hold; it is removed from Redis by the same script that adds
                ``rec.cost_usd``, so spend is counted exactly once.

        A successful record whose ``request_id`` was already recorded (two processes
        fetching the same job's result) ends its hold but is not counted again.

        Raises:
            ValueError: ``reservation`` was made by another ledger.
            BackendUnavailableError: Redis failed; if a hold was given it then lapses by its TTL.
        """
        live = reservation is not None and reservation._claim_for(self, rec.cost_usd)
        self._release_collected()
        payload = json.dumps(rec.to_dict(), separators=(",", ":"), default=str)
        duration = repr(float(rec.duration_ms))
        counted = self._record_script(
            keys=[
                self._day_key(rec.day),
                self._key("totals"),
                self._key("records"),
                self._key("durations"),
                self._key("durations", rec.model_id),
                *self._hold_keys(),
                self._key("recorded", rec.request_id or ""),
            ],
            args=[
                str(to_micros(rec.cost_usd)),
                "1" if rec.success else "0",
                duration,
                rec.model_id,
                payload,
                self.max_records,
                self.duration_window,
                self.day_ttl,
                reservation.id if live and reservation is not None else "",
                rec.request_id if rec.success and rec.request_id else "",
            ],
        )
        if counted:
            after_record(rec, metrics=self.metrics)

    # -- queries --

    @_typed_redis_errors
    def daily_cost(self, day: date | None = None) -> Decimal:
        """What all processes spent on a UTC day (open holds not included).

        Args:
            day: A ``date`` (or aware ``datetime``, taken as its UTC day); today per ``clock`` by default.

        Returns:
            The day's spend as a ``Decimal`` with six places.

        Raises:
            ValueError: ``day`` is a naive datetime.
            redis.RedisError: Redis failed.
        """
        key = utc_day(self.clock() if day is None else day)
        micros = self.redis.hget(self._day_key(key), "cost_micros")
        return from_micros(int(micros or 0))

    @_typed_redis_errors
    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Counters over every call any process recorded, overall (or of one model) and per model.

        Args:
            model: Only this model's counters (``by_model`` then holds just that model).

        Returns:
            The same dict as :meth:`CostLedger.stats() <falwrap.ledger.CostLedger.stats>`. Counters
            and durations are read in two round trips, so under load the percentiles may include
            a few calls the counters do not yet (a dashboard view, not an accounting one).

        Raises:
            redis.RedisError: Redis failed.
        """
        raw = self.redis.hgetall(self._key("totals"))
        scopes: dict[str, dict[str, str]] = {}
        for field, value in raw.items():
            name = _text(field)
            if name.startswith("m:"):
                scope, _, counter = name[2:].rpartition(":")
            else:
                scope, counter = "", name
            scopes.setdefault(scope, {})[counter] = _text(value)
        models = sorted(s for s in scopes if s) if model is None else [model] if model in scopes else []
        pipe = self.redis.pipeline(transaction=False)
        if model is None:
            pipe.lrange(self._key("durations"), 0, -1)
        for name in models:
            pipe.lrange(self._key("durations", name), 0, -1)
        lists: list[list[bytes | str]] = pipe.execute()
        overall = lists.pop(0) if model is None else []

        def summary(scope: str, durations: list[bytes | str]) -> dict[str, Any]:
            c = scopes.get(scope, {})
            return summarize(
                int(c.get("calls", 0)),
                int(c.get("successes", 0)),
                int(c.get("cost_micros", 0)),
                float(c.get("duration_ms", 0.0)),
                sorted(float(d) for d in durations),
            )

        per_model = {name: summary(name, durations) for name, durations in zip(models, lists, strict=True)}
        top = summary("", overall) if model is None else per_model.get(model) or summarize(0, 0, 0, 0.0, ())
        return {**top, "by_model": per_model}

    @_typed_redis_errors
    def by_model(self) -> dict[str, dict[str, Any]]:
        """The ``stats()`` counters of each model seen (see :meth:`stats`).

        Raises:
            redis.RedisError: Redis failed.
        """
        per_model: dict[str, dict[str, Any]] = self.stats()["by_model"]
        return per_model

    @_typed_redis_errors
    def records(self, limit: int | None = None) -> list[CallRecord]:
        """The most recent records of all processes, newest first.

        Args:
            limit: At most this many (the newest); all retained (up to ``max_records``) by default.

        Raises:
            ValueError: ``limit`` is negative.
            redis.RedisError: Redis failed.
        """
        if limit is not None and limit < 0:
            msg = f"limit must be >= 0, got {limit}"
            raise ValueError(msg)
        if limit == 0:
            return []
        items = self.redis.lrange(self._key("records"), 0, -1 if limit is None else limit - 1)
        return [CallRecord.from_dict(json.loads(item)) for item in items]

    # -- budget --

    @_typed_redis_errors
    def reserve(self, amount: Decimal, *, model_id: str | None = None) -> Reservation:
        """Hold ``amount`` of today's budget, atomically across every process sharing the namespace.

        Granted only if today's spend + all open holds (of every process) + ``amount`` stays
        within ``daily_budget_usd``; always granted without a budget. The hold lapses after
        ``reservation_ttl`` seconds (Redis clock) if its owner never ends it.

        Args:
            amount: The call's estimated cost (``Decimal``).
            model_id: The model the call is for (named in the error).

        Returns:
            The :class:`~falwrap.ledger.Reservation`; end it with ``record(rec, reservation=...)``,
            ``settle()``, ``release()`` or a ``with`` block.

        Raises:
            BudgetExceededError: The hold would take the day over budget; nothing is held.
            TypeError, ValueError: ``amount`` is not a valid amount (floats are refused).
            redis.RedisError: Redis failed.
        """
        micros = to_micros(quantize_usd(amount))
        today = utc_day(self.clock())
        rid = new_reservation_id()
        budget = "" if self.daily_budget_usd is None else str(to_micros(self.daily_budget_usd))
        ttl_ms = round(self.reservation_ttl * 1000)
        self._release_collected()
        granted, spent, reserved = self._reserve_script(
            keys=[*self._hold_keys(), self._day_key(today)], args=[rid, str(micros), budget, ttl_ms]
        )
        if not granted:
            assert self.daily_budget_usd is not None  # only a budget can refuse
            raise BudgetExceededError(
                spent=display_usd(from_micros(int(spent))),
                reserved=display_usd(from_micros(int(reserved))),
                estimate=display_usd(from_micros(micros)),
                budget=display_usd(self.daily_budget_usd),
                model_id=model_id,
            )
        return self._handle(from_micros(micros), model_id, rid)

    @_typed_redis_errors
    def reserved(self) -> Decimal:
        """The total held by open reservations of every process (lapsed ones are dropped first).

        Raises:
            redis.RedisError: Redis failed.
        """
        self._release_collected()
        return from_micros(int(self._reserved_script(keys=self._hold_keys())))

    def _release_hold(self, rid: str) -> None:
        self._release_ids([rid])

    def _release_ids(self, ids: list[str]) -> None:
        holds, expiry = self._hold_keys()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(holds, *ids)
        pipe.zrem(expiry, *ids)
        pipe.execute()

    def _release_collected(self) -> None:
        ids: list[str] = []
        while self._collected:
            try:
                ids.append(self._collected.popleft())
            except IndexError:  # another thread drained it between the check and the pop
                break
        if ids:
            self._release_ids(ids)
