"""The limiter twins with their state in Redis, so that many processes and hosts share one limit.

``RedisLeakyBucket`` is the same GCRA as :class:`falwrap.limiter.LeakyBucket`,
its theoretical arrival time (TAT) kept in one key as integer microseconds and
updated by a Lua script that reads the clock with Redis ``TIME``: every process
uses the server's clock, so client clock skew cannot loosen the limit. A caller
reserves its slot in the script and sleeps out the wait locally (a duration, so
the local clock's offset does not matter); slots therefore go out in the order
the script ran, across all processes.

``RedisConcurrencyLimit`` keeps places as leases: a sorted set of lease ids
scored by their expiry (Redis time), pruned by every script that touches it. A
process killed while holding a place loses it when the lease runs out, so no
crash can hold a place forever; :meth:`Slot.renew` extends a lease during a
long job.

Both run the waiting, the deadlines and the slots of :mod:`falwrap.backends.store_limits`;
this module holds their Lua scripts.

Errors: problems found at construction (bad URL, server not answering) raise
:class:`~falwrap.errors.ConfigurationError`. A Redis failure at call time raises
:class:`~falwrap.errors.BackendUnavailableError` (a ``ConnectionError``) chained
to the Redis error, the same error the Redis ledger raises: the limiter could
not grant a slot and nothing was sent to fal. How long such a failure takes is bounded by the client's
socket timeouts and retry policy: :func:`redis_client_from_url` builds a client
with short ones; a client you pass in keeps its own (redis-py's default retries
ten times with backoff, which can take seconds).

Why not pyrate-limiter's Redis GCRA: its script takes ``now`` from the caller's
wall clock (in milliseconds), so hosts with skewed clocks each see their own
schedule, and its ``Limiter`` pads every wait by 50 ms, which at ``burst=1`` halves
the rate actually used (see ``benchmarks/bench_limiter.py``).

redis-py is imported by this module only, so ``import falwrap`` never needs it.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from falwrap.backends.redis_errors import describe, limiter_unavailable
from falwrap.backends.store_limits import DEFAULT_LEASE_SECONDS, MICROS, StoreConcurrencyLimit, StoreLeakyBucket
from falwrap.errors import ConfigurationError

__all__ = ["RedisConcurrencyLimit", "RedisLeakyBucket", "redis_client_from_url"]

#: Seconds to wait for a connection or an answer. Every command falwrap sends is a
#: short script or read (microseconds to a millisecond of server time), so half a second
#: means the server is in trouble, and callers must get an error, not a hang: a call
#: with a one-second deadline still ends in time.
SOCKET_TIMEOUT = 0.5

#: One immediate retry: enough to replace a pooled connection that a Redis restart
#: closed, without multiplying the time a dead server takes to report.
RETRIES = 1

# KEYS[1] = state key. ARGV = emission interval (us), tolerance (us), longest wait
# the caller accepts (us; -1 = any). Returns {granted, wait_us, new_tat, previous_tat}.
# Integers in microseconds: exact in a Lua double (epoch-us ~1.8e15 < 2**53), where
# fractional seconds would lose the low bits. '%.0f' because tostring() keeps 14 digits.
_GCRA_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if max_wait >= 0 and wait > max_wait then
  return {0, wait, 0, 0}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, wait, new_tat, tat}
"""

# Gives a slot back after an interrupted wait, only if no later reservation exists
# (the TAT still ends at ours); a later waiter's slot cannot be moved. ARGV = ours, previous.
_GCRA_GIVE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if tonumber(redis.call('GET', KEYS[1]) or -1) ~= tonumber(ARGV[1]) then return 0 end
local previous = tonumber(ARGV[2])
if previous > now then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', math.ceil((previous - now) / 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS[1] = sorted set of lease ids scored by expiry (us, Redis time).
# ARGV = max_in_flight, lease (us), lease id, renew (1: extend ours, 0: take a new place).
# Returns {held, wait_us}: wait_us is when the earliest lease runs out (a poll hint).
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key = KEYS[1]
local max = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local id = ARGV[3]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if (ARGV[4] == '1' and redis.call('ZSCORE', key, id)) or redis.call('ZCARD', key) < max then
  redis.call('ZADD', key, now + lease, id)
  -- The set lives as long as its longest lease, whoever set it.
  local ttl = math.ceil(lease / 1000) + 1
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return {1, 0}
end
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local wait = 0
if first[2] then wait = tonumber(first[2]) - now end
return {0, wait}
"""


def redis_client_from_url(url: str, *, variable: str = "FALWRAP_REDIS_URL") -> redis.Redis:
    """A redis-py client for falwrap's Redis parts, with short socket timeouts and one retry.

    Thread-safe (redis-py's connection pool) and fork-safe (the pool reconnects in
    a child process).

    Args:
        url: A ``redis://``, ``rediss://`` or ``unix://`` URL.
        variable: The setting the URL came from, named in the error.

    Returns:
        The client; it connects on first use.

    Raises:
        ConfigurationError: the URL cannot be parsed.
    """
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            # Only a dropped connection is retried (a pooled socket a Redis restart closed): a
            # server that does not answer within SOCKET_TIMEOUT fails the call at once, so a
            # hung Redis costs a call half a second, not a multiple of it.
            retry=Retry(NoBackoff(), RETRIES, supported_errors=(redis.ConnectionError,)),
        )
    except (ValueError, TypeError) as exc:
        msg = f"{variable} is not a valid Redis URL ({exc}); expected redis://host:port/db."
        raise ConfigurationError(msg, variable=variable) from None


def _check_reachable(client: redis.Redis) -> None:
    try:
        client.ping()
    except redis.RedisError as exc:
        msg = (
            f"Redis at {describe(client)} is not answering ({type(exc).__name__}: {exc}). Start it, "
            "or fix FALWRAP_REDIS_URL; unset it to limit each process on its own."
        )
        raise ConfigurationError(msg, variable="FALWRAP_REDIS_URL") from exc


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        msg = f"key={key!r} is not valid: expected a non-empty string."
        raise ConfigurationError(msg, variable="key")
    return key


class RedisLeakyBucket(StoreLeakyBucket):
    """A leaky bucket (GCRA) shared by every process using the same Redis key.

    The same interface and behaviour as :class:`~falwrap.limiter.LeakyBucket`:
    FIFO (in the order the script runs, across processes), exact, a timeout
    decided up front with nothing reserved, and an interrupted wait gives its
    slot back when no later reservation exists. The emission interval is
    rounded up to a whole microsecond, so a rate is never exceeded by rounding.

    Thread-safe and fork-safe (redis-py's pool reconnects in a child process).

    Args:
        redis_client: A redis-py client. Its socket timeouts and retry policy bound how
            long a failing call takes; see :func:`redis_client_from_url`.
        key: The Redis key holding the state; expires once the bucket is idle.
        rate_per_minute: Sustained grants per minute, across all processes.
        burst: Grants that may go back to back after an idle spell.
        check: PING the server now, so that a wrong URL fails at construction.

    Raises:
        ConfigurationError: a value is out of range, or Redis does not answer.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        key: str,
        rate_per_minute: float,
        burst: int = 1,
        *,
        check: bool = True,
    ) -> None:
        super().__init__(rate_per_minute, burst)
        self._key = _check_key(key)
        self._redis = redis_client
        self._acquire_script = redis_client.register_script(_GCRA_ACQUIRE)
        self._give_back_script = redis_client.register_script(_GCRA_GIVE_BACK)
        if check:
            _check_reachable(redis_client)

    @property
    def key(self) -> str:
        """The Redis key holding the state."""
        return self._key

    def _where(self) -> str:
        return f"key={self._key!r}"

    def _reserve(self, max_wait_us: int | None) -> tuple[bool, int, int, int]:
        try:
            result = self._acquire_script(
                keys=[self._key],
                args=[self._interval_us, self._tolerance_us, -1 if max_wait_us is None else max_wait_us],
            )
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc
        granted, wait_us, reserved, previous = (int(x) for x in result)
        return bool(granted), wait_us, reserved, previous

    def _undo(self, reserved: int, previous: int) -> None:
        try:
            self._give_back_script(keys=[self._key], args=[reserved, previous])
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc


class RedisConcurrencyLimit(StoreConcurrencyLimit):
    """At most ``max_in_flight`` jobs in flight across every process using the same Redis key.

    Places are leases that run out after ``lease_seconds`` unless renewed, so a
    crashed or killed process frees its places by itself. A waiting
    :meth:`acquire` polls Redis, starting at 5 ms and backing off to 100 ms,
    never later than the earliest lease's expiry. A ``KeyboardInterrupt`` that
    lands while the acquiring script is in flight may leave a lease nobody
    holds; it frees itself after ``lease_seconds``.

    Thread-safe and fork-safe.

    Args:
        redis_client: A redis-py client; see :class:`RedisLeakyBucket` about timeouts.
        key: The Redis key (a sorted set) holding the leases.
        max_in_flight: The cap; a whole number of at least 1.
        lease_seconds: How long a place is held without :meth:`Slot.renew`.
        check: PING the server now, so that a wrong URL fails at construction.

    Raises:
        ConfigurationError: a value is out of range, or Redis does not answer.
    """

    SLOT_NAME = "RedisSlot"

    def __init__(
        self,
        redis_client: redis.Redis,
        key: str,
        max_in_flight: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        *,
        check: bool = True,
    ) -> None:
        super().__init__(max_in_flight, lease_seconds)
        self._key = _check_key(key)
        self._redis = redis_client
        self._script = redis_client.register_script(_LEASE)
        if check:
            _check_reachable(redis_client)

    @property
    def key(self) -> str:
        """The Redis key holding the leases."""
        return self._key

    def _where(self) -> str:
        return f"key={self._key!r}"

    def in_flight(self) -> int:
        """Places held right now, across all processes (expired leases not counted).

        Raises:
            BackendUnavailableError: Redis could not be reached.
        """
        try:
            seconds, micros = self._redis.time()
            now_us = int(seconds) * MICROS + int(micros)
            return int(self._redis.zcount(self._key, f"({now_us}", "+inf"))
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc

    def _take(self, lease_id: str, renew: bool) -> tuple[bool, float]:
        try:
            held, wait_us = self._script(
                keys=[self._key], args=[self._max, self._lease_us, lease_id, 1 if renew else 0]
            )
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc
        return bool(held), int(wait_us) / MICROS

    def _drop(self, lease_id: str) -> None:
        try:
            self._redis.zrem(self._key, lease_id)
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc
