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

import logging
import math
import os
import time
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from falwrap.backends.redis_errors import describe, limiter_unavailable
from falwrap.errors import BackendUnavailableError, ConfigurationError
from falwrap.limits import Slot, check_count, check_rate, check_timeout, concurrency_timeout, rate_timeout

__all__ = ["RedisConcurrencyLimit", "RedisLeakyBucket", "redis_client_from_url"]

logger = logging.getLogger(__name__)

#: Seconds to wait for a connection or an answer. Every command falwrap sends is a
#: short script or read (microseconds to a millisecond of server time), so half a second
#: means the server is in trouble, and callers must get an error, not a hang: a call
#: with a one-second deadline still ends in time.
SOCKET_TIMEOUT = 0.5

#: One immediate retry: enough to replace a pooled connection that a Redis restart
#: closed, without multiplying the time a dead server takes to report.
RETRIES = 1

#: Longest pause between two polls of a full RedisConcurrencyLimit. Polling starts
#: at POLL_MIN and doubles; a place freed by release() is seen within this delay.
POLL_MAX = 0.1
POLL_MIN = 0.005

_MICROS = 1_000_000

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


class RedisLeakyBucket:
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
        self._rate = check_rate(rate_per_minute)
        self._burst = check_count(burst, "burst")
        self._key = _check_key(key)
        self._redis = redis_client
        self._interval_us = max(1, math.ceil(60 * _MICROS / self._rate))
        self._tolerance_us = (self._burst - 1) * self._interval_us
        self._acquire_script = redis_client.register_script(_GCRA_ACQUIRE)
        self._give_back_script = redis_client.register_script(_GCRA_GIVE_BACK)
        if check:
            _check_reachable(redis_client)

    @property
    def rate_per_minute(self) -> float:
        """Sustained grants per minute, across all processes."""
        return self._rate

    @property
    def burst(self) -> int:
        """Grants that may go back to back after an idle spell."""
        return self._burst

    @property
    def key(self) -> str:
        """The Redis key holding the state."""
        return self._key

    def __repr__(self) -> str:
        return f"RedisLeakyBucket(key={self._key!r}, rate_per_minute={self._rate:g}, burst={self._burst})"

    def _run(self, max_wait_us: int) -> list[int]:
        try:
            result = self._acquire_script(keys=[self._key], args=[self._interval_us, self._tolerance_us, max_wait_us])
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc
        return [int(x) for x in result]

    def acquire(self, timeout: float | None = None) -> float:
        """Wait for the next request slot and take it; waiters are served in arrival order.

        Thread-safe and process-safe.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed.

        Returns:
            Seconds waited (0.0 when a slot was free).

        Raises:
            RateLimitTimeout: the slot is further away than ``timeout`` (raised at
                once, ``wait`` set, nothing reserved).
            BackendUnavailableError: Redis could not be reached.
        """
        limit = check_timeout(timeout)
        start = time.monotonic()
        granted, wait_us, reserved, previous = self._run(-1 if limit is None else math.floor(limit * _MICROS))
        if not granted:
            raise rate_timeout(wait_us / _MICROS, limit or 0.0)
        if wait_us == 0:
            return 0.0
        # The wait is a duration measured by Redis; sleeping it out on the local
        # clock keeps the slot's time whatever the offset between the two clocks.
        # Counted from the reply, not the request, so network latency can only
        # make the grant late, never early.
        due = time.monotonic() + wait_us / _MICROS
        try:
            while True:
                remaining = due - time.monotonic()
                if remaining <= 0.0:
                    return time.monotonic() - start
                time.sleep(remaining)
        except BaseException:
            self._give_back(reserved, previous)
            raise

    def try_acquire(self) -> float:
        """Take a slot only if one is free now; never waits and never queues.

        Thread-safe and process-safe.

        Returns:
            0.0 when a slot was granted, else the seconds until one would be
            (nothing is reserved).

        Raises:
            BackendUnavailableError: Redis could not be reached.
        """
        granted, wait_us, _, _ = self._run(0)
        return 0.0 if granted else wait_us / _MICROS

    def _give_back(self, reserved: int, previous: int) -> None:
        try:
            self._give_back_script(keys=[self._key], args=[reserved, previous])
        except redis.RedisError:
            # Best effort while another exception propagates: the slot stays a gap.
            logger.warning("could not give back an interrupted rate-limit slot", exc_info=True)


class _RedisSlot(Slot):
    """A lease held in a :class:`RedisConcurrencyLimit`."""

    __slots__ = ("_id", "_limit", "_released", "lease_seconds")

    def __init__(self, limit: RedisConcurrencyLimit, lease_id: str) -> None:
        self._limit = limit
        self._id = lease_id
        self._released = False
        self.lease_seconds = limit.lease_seconds

    def release(self) -> None:
        """Give the place back (idempotent).

        A Redis failure here is logged, not raised -- ``release()`` usually runs
        while another exception propagates -- and the lease then runs out by itself.
        """
        if self._released:
            return
        self._released = True
        self._limit._release(self._id)

    def renew(self) -> bool:
        """Extend the lease by ``lease_seconds`` from now; call it more often than that.

        A lease that had already run out is taken back if a place is free.

        Returns:
            ``True`` while the place is held; ``False`` after :meth:`release`, when
            every place was taken by others, or when Redis could not be reached
            (logged).
        """
        if self._released:
            return False
        return self._limit._renew(self._id)

    def __repr__(self) -> str:
        return f"<RedisSlot {self._id} {'released' if self._released else 'held'}>"


class RedisConcurrencyLimit:
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

    def __init__(
        self,
        redis_client: redis.Redis,
        key: str,
        max_in_flight: int,
        lease_seconds: float = 60,
        *,
        check: bool = True,
    ) -> None:
        self._max = check_count(max_in_flight, "max_in_flight")
        self._key = _check_key(key)
        if (
            not isinstance(lease_seconds, (int, float))
            or isinstance(lease_seconds, bool)
            or not math.isfinite(lease_seconds)
            or lease_seconds < 0.01
        ):
            msg = f"lease_seconds={lease_seconds!r} is not valid: expected a number of seconds of at least 0.01."
            raise ConfigurationError(msg, variable="lease_seconds")
        self._lease_seconds = float(lease_seconds)
        self._lease_us = math.ceil(lease_seconds * _MICROS)
        self._redis = redis_client
        self._script = redis_client.register_script(_LEASE)
        if check:
            _check_reachable(redis_client)

    @property
    def max_in_flight(self) -> int:
        """The cap on jobs in flight, across all processes."""
        return self._max

    @property
    def lease_seconds(self) -> float:
        """How long a place is held without renewal."""
        return self._lease_seconds

    @property
    def key(self) -> str:
        """The Redis key holding the leases."""
        return self._key

    def __repr__(self) -> str:
        return (
            f"RedisConcurrencyLimit(key={self._key!r}, max_in_flight={self._max}, "
            f"lease_seconds={self._lease_seconds:g})"
        )

    def in_flight(self) -> int:
        """Places held right now, across all processes (expired leases not counted).

        Raises:
            BackendUnavailableError: Redis could not be reached.
        """
        try:
            return int(self._redis.zcount(self._key, f"({self._redis_now_us()}", "+inf"))
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc

    def _redis_now_us(self) -> int:
        seconds, micros = self._redis.time()
        return int(seconds) * _MICROS + int(micros)

    def _call(self, lease_id: str, renew: bool) -> tuple[bool, float]:
        try:
            held, wait_us = self._script(
                keys=[self._key], args=[self._max, self._lease_us, lease_id, 1 if renew else 0]
            )
        except redis.RedisError as exc:
            raise limiter_unavailable(self._redis, exc) from exc
        return bool(held), int(wait_us) / _MICROS

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a free place and hold it as a lease.

        Thread-safe and process-safe. Not FIFO: whichever poll comes first wins.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed, 0
                takes a place only if one is free now.

        Returns:
            The held :class:`~falwrap.limiter.Slot`; its ``lease_seconds`` says how
            often to :meth:`~falwrap.limiter.Slot.renew` it during a long job.

        Raises:
            RateLimitTimeout: no place came free within ``timeout``.
            BackendUnavailableError: Redis could not be reached.
        """
        limit = check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        lease_id = f"{os.getpid()}-{uuid.uuid4().hex}"
        pause = POLL_MIN
        while True:
            held, earliest_expiry = self._call(lease_id, renew=False)
            if held:
                return _RedisSlot(self, lease_id)
            nap = min(pause, max(earliest_expiry, 0.001))
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    raise concurrency_timeout(self._max, limit or 0.0)
                nap = min(nap, remaining)
            time.sleep(nap)
            pause = min(pause * 2, POLL_MAX)

    def _release(self, lease_id: str) -> None:
        try:
            self._redis.zrem(self._key, lease_id)
        except redis.RedisError:
            logger.warning(
                "could not release a concurrency lease in Redis; it frees itself after %g s",
                self._lease_seconds,
                exc_info=True,
            )

    def _renew(self, lease_id: str) -> bool:
        try:
            held, _ = self._call(lease_id, renew=True)
        except BackendUnavailableError:
            logger.warning("could not renew a concurrency lease in Redis", exc_info=True)
            return False
        return held
