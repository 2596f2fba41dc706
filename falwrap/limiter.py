"""Client-side pacing in this process: a GCRA leaky bucket, a cap on jobs in flight, and the pair the client uses.

The interfaces (:class:`RateLimiter`, :class:`ConcurrencyLimiter`, :class:`Slot`) are in
:mod:`falwrap.limits`; the twins shared between processes are opened from the store URL
by :mod:`falwrap.backends`. :class:`Limiter` bundles one rate limiter and an optional
concurrency cap.

Why not pyrate-limiter or limits: measured at 20/s with ``burst=1``, pyrate-limiter pads
every wait by 50 ms (``buffer_ms``) and so uses about half of the configured rate;
``limits`` has no blocking API at all (callers must poll) and its sliding-window
counter let 34 requests through in one second at 20/s. fal bills and throttles per
request, so the bucket here must be exact on both sides: never over the rate, and
never needlessly under it. ``benchmarks/bench_limiter.py`` measures all of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from falwrap.errors import ConfigurationError
from falwrap.limits import (
    ConcurrencyLimiter,
    RateLimiter,
    Slot,
    check_count,
    check_rate,
    check_timeout,
    concurrency_timeout,
    rate_timeout,
)

if TYPE_CHECKING:
    from falwrap.config import RateLimitConfig

__all__ = [
    "ConcurrencyLimit",
    "ConcurrencyLimiter",
    "LeakyBucket",
    "LeaseKeeper",
    "Limiter",
    "RateLimiter",
    "Slot",
]

# --- Fork safety ---------------------------------------------------------------------------------

#: Every live in-process limiter; after a fork the child re-creates their locks, because a
#: lock held by a parent thread at fork time would otherwise stay held in the child forever.
_FORK_AWARE: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


class _ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


def _reset_after_fork() -> None:
    for limiter in list(_FORK_AWARE):
        limiter._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    # One process-wide hook over a WeakSet: hooks cannot be unregistered, so one per
    # instance would leak a closure for every limiter ever built.
    os.register_at_fork(after_in_child=_reset_after_fork)


# --- LeakyBucket ---------------------------------------------------------------------------------


class LeakyBucket:
    """A leaky bucket (GCRA): at most ``rate_per_minute`` grants a minute, ``burst`` back to back.

    The state is one number, the theoretical arrival time (TAT): when the next
    slot is due if nobody waits. Emission interval ``T = 60 / rate_per_minute``,
    tolerance ``(burst - 1) * T``. A caller reserves its slot at the TAT under the
    lock, advances the TAT by ``T``, and then sleeps outside the lock until its
    slot. Consequences, by construction:

    * FIFO: slots go out in the order callers took the lock, which is held for
      a few arithmetic operations only: a caller arriving later than that gets a
      later slot (callers arriving within the same microseconds are ordered as the
      OS grants the lock).
    * Exact: grants are ``T`` apart (plus the OS's wake-up latency), with no
      padding and no busy-wait; the sleeper re-reads the clock after each sleep.
    * A timeout is decided up front: when the slot is further away than
      ``timeout``, :class:`~falwrap.errors.RateLimitTimeout` is raised at once and
      nothing is reserved.

    Interrupted waits (``KeyboardInterrupt`` or any exception during the sleep):
    the slot is given back only when nobody reserved after it (the TAT still
    ends at that slot). When later waiters exist, their slots are already fixed
    in time; moving them up would need waking them, and shrinking the queue from
    the middle cannot be done without that, so the slot stays a gap -- capacity
    lost once, never a grant above the rate.

    Thread-safe (one ``threading.Lock`` held only for arithmetic). Fork-safe: a
    child process gets a fresh lock (and keeps a copy of the parent's TAT, so it
    starts no earlier than the parent would have); separate processes do not
    share a limit -- use ``RedisLeakyBucket`` for that.

    Args:
        rate_per_minute: Sustained grants per minute; a positive, finite number.
        burst: Grants that may go back to back after an idle spell; at least 1.
        clock: Monotonic clock in seconds (inject a fake in tests).
        sleep: Sleep function in seconds (inject a fake in tests).

    Raises:
        ConfigurationError: ``rate_per_minute`` is not positive and finite, or
            ``burst`` is not a whole number of at least 1.
    """

    # A plain slotted class rather than attrs: acquire() is the hot path (over a
    # million calls a second), so it writes one slot attribute and nothing else --
    # no on_setattr hooks -- and construction must raise ConfigurationError.
    __slots__ = ("__weakref__", "_burst", "_clock", "_interval", "_lock", "_rate", "_sleep", "_tat", "_tolerance")

    def __init__(
        self,
        rate_per_minute: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._rate = check_rate(rate_per_minute)
        self._burst = check_count(burst, "burst")
        self._interval = 60.0 / self._rate
        self._tolerance = (self._burst - 1) * self._interval
        # -inf reads as "long idle": the first max(tat, now) picks now, whatever the clock's origin.
        self._tat = -math.inf
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        _FORK_AWARE.add(self)

    @property
    def rate_per_minute(self) -> float:
        """Sustained grants per minute."""
        return self._rate

    @property
    def burst(self) -> int:
        """Grants that may go back to back after an idle spell."""
        return self._burst

    def __repr__(self) -> str:
        return f"LeakyBucket(rate_per_minute={self._rate:g}, burst={self._burst})"

    def acquire(self, timeout: float | None = None) -> float:
        """Wait for the next request slot and take it; waiters are served in arrival order.

        Thread-safe.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed, 0
                takes a slot only if one is free now.

        Returns:
            Seconds waited (0.0 when a slot was free).

        Raises:
            RateLimitTimeout: the slot is further away than ``timeout``; raised at
                once, with ``wait`` set, and no slot stays reserved.
        """
        clock = self._clock
        lock = self._lock
        # acquire()/release() rather than `with`: this method measured ~1.4x faster
        # (CPython 3.11), and the try/finally releases the lock on every exit the same.
        lock.acquire()
        try:
            now = clock()
            tat = self._tat
            # A comparison, not max(): a builtin call is measurably slower on this path.
            if tat < now:  # noqa: PLR1730
                tat = now
            due = tat - self._tolerance
            if due <= now:
                self._tat = tat + self._interval
                return 0.0
            wait = due - now
            # Decided before reserving, so a refusal leaves the queue as it was.
            refused = timeout is not None and wait > timeout
            if not refused:
                reserved = self._tat = tat + self._interval
        finally:
            lock.release()
        if refused:
            raise rate_timeout(wait, check_timeout(timeout) or 0.0)
        try:
            sleep = self._sleep
            while True:
                # Re-read the clock: a sleep may end early (signals, fakes) or late (load).
                remaining = due - clock()
                if remaining <= 0.0:
                    return clock() - now
                sleep(remaining)
        except BaseException:
            self._give_back(reserved, tat)
            raise

    def try_acquire(self) -> float:
        """Take a slot only if one is free now; never waits and never queues.

        Thread-safe. A slot is free only when no waiter is queued, so this never
        overtakes callers already waiting in :meth:`acquire`.

        Returns:
            0.0 when a slot was granted, else the seconds until one would be
            (nothing is reserved).
        """
        lock = self._lock
        lock.acquire()  # see acquire() for why not `with`
        try:
            now = self._clock()
            tat = self._tat
            if tat < now:  # noqa: PLR1730 - see acquire()
                tat = now
            due = tat - self._tolerance
            if due <= now:
                self._tat = tat + self._interval
                return 0.0
            return due - now
        finally:
            lock.release()

    def _give_back(self, reserved: float, previous: float) -> None:
        with self._lock:
            # Only the newest reservation can be undone without moving slots
            # already promised to later waiters (see the class docstring).
            if self._tat == reserved:
                self._tat = previous

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


# --- ConcurrencyLimit ----------------------------------------------------------------------------


class _ProcessSlot(Slot):
    """A place held in a :class:`ConcurrencyLimit`."""

    __slots__ = ("_generation", "_limit", "_released")

    def __init__(self, limit: ConcurrencyLimit, generation: int) -> None:
        self._limit = limit
        self._generation = generation
        self._released = False

    def release(self) -> None:
        """Give the place back (idempotent, thread-safe)."""
        self._limit._release(self)

    def renew(self) -> bool:
        """Nothing to extend in-process: the place is held until released.

        Returns:
            ``True`` while the slot is held, ``False`` after :meth:`release`.
        """
        return not self._released

    def __repr__(self) -> str:
        return f"<Slot {'released' if self._released else 'held'}>"

    def __del__(self) -> None:
        # Safety net for a slot dropped without release(), e.g. a KeyboardInterrupt
        # landing between acquire() returning and the `with` block starting: without
        # it the place would be lost for the life of the process.
        if not self._released:
            with contextlib.suppress(Exception):  # interpreter shutdown
                self._limit._release(self)


class ConcurrencyLimit:
    """At most ``max_in_flight`` jobs in flight at once from this process.

    Thread-safe. :meth:`acquire` returns a :class:`Slot`; use it as a context
    manager so the place is released on every path (success, error, timeout,
    ``KeyboardInterrupt``). A ``KeyboardInterrupt`` while waiting holds nothing.
    Fork-safe: a child process starts with every place free and a fresh lock;
    slots inherited from the parent are ignored by the child's :meth:`Slot.release`.

    Args:
        max_in_flight: The cap; a whole number of at least 1.

    Raises:
        ConfigurationError: ``max_in_flight`` is not a whole number of at least 1.
    """

    __slots__ = ("__weakref__", "_cond", "_generation", "_in_flight", "_max")

    def __init__(self, max_in_flight: int) -> None:
        self._max = check_count(max_in_flight, "max_in_flight")
        self._in_flight = 0
        # Bumped in a forked child so slots copied from the parent cannot release the child's places.
        self._generation = 0
        # Re-entrant: Slot.__del__ may run from the garbage collector inside this very
        # lock's critical section on the same thread, and a plain Lock would deadlock.
        self._cond = threading.Condition(threading.RLock())
        _FORK_AWARE.add(self)

    @property
    def max_in_flight(self) -> int:
        """The cap on jobs in flight."""
        return self._max

    def in_flight(self) -> int:
        """Places held right now (a snapshot; a method, like the Redis twin's).

        Returns:
            The number of places held.
        """
        return self._in_flight

    def __repr__(self) -> str:
        return f"ConcurrencyLimit(max_in_flight={self._max}, in_flight={self._in_flight})"

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a free place and hold it.

        Thread-safe. Waiters are woken in the order they started waiting, but a
        caller arriving just as a place frees may take it first.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed, 0
                takes a place only if one is free now.

        Returns:
            The held :class:`Slot`.

        Raises:
            RateLimitTimeout: no place came free within ``timeout``; nothing is held.
        """
        timeout = check_timeout(timeout)
        cond = self._cond
        with cond:
            if self._in_flight >= self._max:
                try:
                    self._wait_for_place(timeout)
                except BaseException:
                    # This waiter may have been the one notified of a freed place;
                    # pass the wake-up on so that place does not sit idle.
                    cond.notify()
                    raise
            self._in_flight += 1
            return _ProcessSlot(self, self._generation)

    def _wait_for_place(self, timeout: float | None) -> None:
        # Called with the condition's lock held; returns holding it, with a place free.
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._in_flight >= self._max:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0.0:
                raise concurrency_timeout(self._max, timeout or 0.0)
            self._cond.wait(remaining)

    def _release(self, slot: _ProcessSlot) -> None:
        with self._cond:
            if slot._released:
                return
            slot._released = True
            if slot._generation == self._generation:
                self._in_flight -= 1
                self._cond.notify()

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._in_flight = 0
        self._generation += 1


class _NoSlot(Slot):
    """Stands in for a slot when no concurrency cap is configured."""

    __slots__ = ()

    def release(self) -> None:
        """Nothing to give back."""

    def renew(self) -> bool:
        """Always held.

        Returns:
            ``True``.
        """
        return True


# --- Limiter -------------------------------------------------------------------------------------


@attrs.frozen
class Limiter:
    """The limiter a client uses: a rate limiter, and optionally a cap on jobs in flight.

    Thread-safe when its parts are (all of falwrap's are).

    Args:
        rate: Paces submissions (a :class:`LeakyBucket` or ``RedisLeakyBucket``).
        concurrency: Caps jobs in flight (a :class:`ConcurrencyLimit` or
            ``RedisConcurrencyLimit``), or ``None`` for no cap.
    """

    rate: RateLimiter
    concurrency: ConcurrencyLimiter | None = None
    #: A resource the limiter owns (a connection pool opened for it), closed by close().
    _owned: Any = attrs.field(default=None, repr=False, eq=False, alias="_owned")

    @classmethod
    def from_config(cls, config: RateLimitConfig, namespace: str) -> Limiter:
        """The in-process limiter a :class:`~falwrap.config.RateLimitConfig` describes.

        Limits shared between processes are opened from the store URL by
        :func:`falwrap.backends.open_shared_state`, with the store's connection pool.

        Args:
            config: Rate, burst and concurrency cap.
            namespace: Kept for compatibility; an in-process limiter needs none, but it
                must still be a non-empty string (a hash of the API key, never the key).

        Raises:
            ConfigurationError: a value is out of range or the namespace is empty; or
                ``config.redis_url`` is set (open shared limits with ``open_shared_state``).
        """
        if not isinstance(namespace, str) or not namespace:
            msg = "The limiter namespace must be a non-empty string (a hash of the API key)."
            raise ConfigurationError(msg, variable="namespace")
        if config.redis_url is not None:
            msg = (
                "Limiter.from_config builds in-process limits only; for limits shared through "
                "FALWRAP_STORE_URL (or FALWRAP_REDIS_URL) use falwrap.backends.open_shared_state(config)."
            )
            raise ConfigurationError(msg, variable="redis_url")
        rate_per_minute = check_rate(config.requests_per_minute)
        burst = check_count(config.burst, "burst")
        max_in_flight = None if config.max_concurrent is None else check_count(config.max_concurrent, "max_concurrent")
        return cls(
            LeakyBucket(rate_per_minute, burst),
            None if max_in_flight is None else ConcurrencyLimit(max_in_flight),
        )

    def acquire(self, timeout: float | None = None) -> Slot:
        """Hold a concurrency place, then take a rate slot, within one deadline.

        The place is taken first so a rate slot is never spent while waiting
        for a place; if the rate slot cannot be had, the place is released.

        Thread-safe.

        Args:
            timeout: Longest total wait in seconds; ``None`` waits as long as needed.

        Returns:
            The held :class:`Slot` (a no-op one when there is no concurrency cap);
            release it when the job has finished.

        Raises:
            RateLimitTimeout: either limit could not be met within ``timeout``;
                nothing stays held.
        """
        timeout = check_timeout(timeout)
        if self.concurrency is None:
            self.rate.acquire(timeout)
            return _NoSlot()
        start = time.monotonic()
        slot = self.concurrency.acquire(timeout)
        try:
            self.rate.acquire(None if timeout is None else max(0.0, timeout - (time.monotonic() - start)))
        except BaseException:
            slot.release()
            raise
        return slot

    def close(self) -> None:
        """Close what this limiter owns (a connection pool handed to it); idempotent."""
        if self._owned is not None:
            self._owned.close()


class LeaseKeeper:
    """Renews the leases of shared concurrency places while their jobs run. Thread-safe.

    A job can go minutes without a status event (a long video with nobody
    listening to its logs), longer than a lease. One daemon thread per client
    renews every held lease each third of the shortest lease; it runs only
    while some place is held and exits as soon as none is, so no thread
    outlives the calls it serves. In-process places (no lease) are not tracked.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[int, Slot] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, slot: Slot) -> None:
        """Keep ``slot`` renewed until :meth:`drop` (a no-op for places without a lease)."""
        if slot.lease_seconds is None:
            return
        with self._lock:
            self._slots[id(slot)] = slot
            if self._thread is None:
                self._wake.clear()
                self._thread = threading.Thread(target=self._run, name="falwrap-lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, slot: Slot) -> None:
        """Stop renewing ``slot`` (it is being released)."""
        with self._lock:
            self._slots.pop(id(slot), None)
            if not self._slots:
                self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                slots = list(self._slots.values())
                if not slots:
                    self._thread = None
                    self._wake.clear()
                    return
            every = min(float(slot.lease_seconds or 0.0) for slot in slots) / 3
            if self._wake.wait(every):
                # Woken by a drop: look again (a hold may have come since, so clear first).
                with self._lock:
                    self._wake.clear()
                continue
            for slot in slots:
                # renew() never raises: a lease it cannot keep is logged and lapses.
                slot.renew()
