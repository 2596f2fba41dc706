"""The two limits every shared store runs, each around the store's own atomic step.

A shared store (SQL, Redis) keeps a limit's state on its server and does there,
atomically, only the step that must not interleave with other processes:

* :class:`StoreLeakyBucket` -- one GCRA step (:meth:`~StoreLeakyBucket._reserve`),
  on a theoretical arrival time (TAT) in integer microseconds of the store's
  clock, and giving back an interrupted reservation (:meth:`~StoreLeakyBucket._undo`).
* :class:`StoreConcurrencyLimit` -- taking or renewing a lease
  (:meth:`~StoreConcurrencyLimit._take`) and dropping one (:meth:`~StoreConcurrencyLimit._drop`).

Everything around that step is the same for every store and lives here once: the
checks, sleeping out a reserved wait on the local monotonic clock, the deadline
and the polling back-off, the :class:`~falwrap.limits.Slot` a caller holds, and
what is logged when a release or renewal cannot reach the store.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import time
import uuid

from falwrap.errors import BackendUnavailableError
from falwrap.limits import (
    Slot,
    check_count,
    check_lease,
    check_rate,
    check_timeout,
    concurrency_timeout,
    rate_timeout,
)

__all__ = ["DEFAULT_LEASE_SECONDS", "MICROS", "LeaseSlot", "StoreConcurrencyLimit", "StoreLeakyBucket"]

logger = logging.getLogger(__name__)

#: How long a concurrency place is held without renewal, unless the caller says otherwise.
DEFAULT_LEASE_SECONDS = 60.0

#: Polling a full concurrency limit starts at POLL_MIN seconds and doubles up to POLL_MAX,
#: never past the earliest lease's expiry: a freed place is seen within POLL_MAX.
POLL_MIN = 0.005
POLL_MAX = 0.1

#: Microseconds in a second: the stores keep times as integers, exact where float seconds are not.
MICROS = 1_000_000


class StoreLeakyBucket(abc.ABC):
    """A leaky bucket (GCRA) whose schedule lives in a store, shared by every process using it.

    The behaviour of :class:`~falwrap.limiter.LeakyBucket`: FIFO (in the order the
    store ran the reservations), exact (the emission interval is rounded up to a
    whole microsecond, so rounding never exceeds the rate), a timeout decided up
    front with nothing reserved, and an interrupted wait gives its slot back when
    no later reservation exists.

    A subclass supplies the store's atomic steps, :meth:`_reserve` and :meth:`_undo`,
    and :meth:`_where` for the repr.

    Args:
        rate_per_minute: Sustained grants per minute, across all processes.
        burst: Grants that may go back to back after an idle spell.

    Raises:
        ConfigurationError: a value is out of range.
    """

    def __init__(self, rate_per_minute: float, burst: int = 1) -> None:
        self._rate = check_rate(rate_per_minute)
        self._burst = check_count(burst, "burst")
        self._interval_us = max(1, math.ceil(60 * MICROS / self._rate))
        self._tolerance_us = (self._burst - 1) * self._interval_us

    @property
    def rate_per_minute(self) -> float:
        """Sustained grants per minute, across all processes."""
        return self._rate

    @property
    def burst(self) -> int:
        """Grants that may go back to back after an idle spell."""
        return self._burst

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where()}, rate_per_minute={self._rate:g}, burst={self._burst})"

    @abc.abstractmethod
    def _where(self) -> str:
        """Which schedule this is, for the repr (never a password)."""

    @abc.abstractmethod
    def _reserve(self, max_wait_us: int | None) -> tuple[bool, int, int, int]:
        """One GCRA step, atomic across processes: ``(granted, wait_us, reserved_tat, previous_tat)``.

        Reads the store's clock, takes ``tat = max(stored, now)`` and
        ``wait_us = max(0, tat - tolerance - now)``; when ``max_wait_us`` is not
        ``None`` and the wait is longer, returns ``(False, wait_us, 0, 0)`` with nothing
        stored; else stores ``tat + interval``.

        Raises:
            BackendUnavailableError: the store could not be reached.
        """

    @abc.abstractmethod
    def _undo(self, reserved: int, previous: int) -> None:
        """Set the TAT back to ``previous`` if it still ends at ``reserved``, atomically.

        Only the newest reservation can be undone: later waiters' slots are already promised.

        Raises:
            BackendUnavailableError: the store could not be reached.
        """

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
            BackendUnavailableError: the store could not be reached.
        """
        limit = check_timeout(timeout)
        start = time.monotonic()
        granted, wait_us, reserved, previous = self._reserve(None if limit is None else math.floor(limit * MICROS))
        if not granted:
            raise rate_timeout(wait_us / MICROS, limit or 0.0)
        if wait_us == 0:
            return 0.0
        # The wait is a duration measured by the store; sleeping it out on the local
        # clock keeps the slot's time whatever the offset between the two clocks.
        # Counted from the reply, not the request, so the round trip can only
        # make the grant late, never early.
        due = time.monotonic() + wait_us / MICROS
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
            BackendUnavailableError: the store could not be reached.
        """
        granted, wait_us, _, _ = self._reserve(0)
        return 0.0 if granted else wait_us / MICROS

    def _give_back(self, reserved: int, previous: int) -> None:
        try:
            self._undo(reserved, previous)
        except BackendUnavailableError:
            # Best effort while another exception propagates: the slot stays a gap.
            logger.warning("could not give back an interrupted rate-limit slot", exc_info=True)


class LeaseSlot(Slot):
    """A lease held in a :class:`StoreConcurrencyLimit`."""

    __slots__ = ("_id", "_limit", "_released", "lease_seconds")

    def __init__(self, limit: StoreConcurrencyLimit, lease_id: str) -> None:
        self._limit = limit
        self._id = lease_id
        self._released = False
        self.lease_seconds = limit.lease_seconds

    def release(self) -> None:
        """Give the place back (idempotent).

        A store failure here is logged, not raised (``release()`` usually runs
        while another exception propagates); the lease then runs out by itself.
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
            the lease had run out and every place was taken, or when the store
            could not be reached (logged).
        """
        if self._released:
            return False
        return self._limit._renew(self._id)

    def __repr__(self) -> str:
        return f"<{self._limit.SLOT_NAME} {self._id} {'released' if self._released else 'held'}>"


class StoreConcurrencyLimit(abc.ABC):
    """At most ``max_in_flight`` jobs in flight across every process sharing a store's leases.

    Places are leases that run out after ``lease_seconds`` unless renewed, so a
    killed process frees its places by itself. A waiting :meth:`acquire` polls the
    store, from 5 ms backing off to 100 ms, never later than the earliest lease's
    expiry (not FIFO: whichever poll comes first wins).

    A subclass supplies the store's atomic steps, :meth:`_take` and :meth:`_drop`,
    :meth:`in_flight`, and :meth:`_where` for the repr.

    Args:
        max_in_flight: The cap; a whole number of at least 1.
        lease_seconds: How long a place is held without :meth:`Slot.renew`.

    Raises:
        ConfigurationError: a value is out of range.
    """

    #: The name a held slot shows in its repr.
    SLOT_NAME = "LeaseSlot"

    def __init__(self, max_in_flight: int, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self._max = check_count(max_in_flight, "max_in_flight")
        self._lease_seconds = check_lease(lease_seconds)
        self._lease_us = math.ceil(self._lease_seconds * MICROS)

    @property
    def max_in_flight(self) -> int:
        """The cap on jobs in flight, across all processes."""
        return self._max

    @property
    def lease_seconds(self) -> float:
        """How long a place is held without renewal."""
        return self._lease_seconds

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._where()}, max_in_flight={self._max}, lease_seconds={self._lease_seconds:g})"
        )

    @abc.abstractmethod
    def _where(self) -> str:
        """Whose leases these are, for the repr (never a password)."""

    @abc.abstractmethod
    def in_flight(self) -> int:
        """Places held right now, across all processes (lapsed leases not counted).

        Raises:
            BackendUnavailableError: the store could not be reached.
        """

    @abc.abstractmethod
    def _take(self, lease_id: str, renew: bool) -> tuple[bool, float]:
        """Prune lapsed leases, then hold ``lease_id`` for ``lease_seconds`` from now, atomically.

        With ``renew``, a lease still held is extended whatever the count; else (or
        when it had lapsed) it is taken only while fewer than ``max_in_flight`` are held.

        Returns:
            ``(held, seconds until the earliest lease lapses)``; the seconds are a poll hint.

        Raises:
            BackendUnavailableError: the store could not be reached.
        """

    @abc.abstractmethod
    def _drop(self, lease_id: str) -> None:
        """Delete the lease ``lease_id``.

        Raises:
            BackendUnavailableError: the store could not be reached.
        """

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a free place and hold it as a lease.

        Thread-safe and process-safe. A ``KeyboardInterrupt`` landing while the
        store takes the lease may leave a lease nobody holds; it lapses after
        ``lease_seconds``.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed, 0
                takes a place only if one is free now.

        Returns:
            The held :class:`~falwrap.limits.Slot`; its ``lease_seconds`` says how
            often to :meth:`~falwrap.limits.Slot.renew` it during a long job.

        Raises:
            RateLimitTimeout: no place came free within ``timeout``; nothing is held.
            BackendUnavailableError: the store could not be reached.
        """
        limit = check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        lease_id = f"{os.getpid()}-{uuid.uuid4().hex}"
        pause = POLL_MIN
        while True:
            held, earliest_expiry = self._take(lease_id, renew=False)
            if held:
                return LeaseSlot(self, lease_id)
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
            self._drop(lease_id)
        except BackendUnavailableError:
            logger.warning(
                "could not release a concurrency lease; it frees itself after %g s", self._lease_seconds, exc_info=True
            )

    def _renew(self, lease_id: str) -> bool:
        try:
            held, _ = self._take(lease_id, renew=True)
        except BackendUnavailableError:
            logger.warning("could not renew a concurrency lease", exc_info=True)
            return False
        return held
