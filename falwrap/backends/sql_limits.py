"""The limits in SQL: a GCRA schedule row and concurrency leases, shared by every process on the database.

:class:`SqlLeakyBucket` is the GCRA of :class:`falwrap.limiter.LeakyBucket`
with its theoretical arrival time (TAT) in one row per namespace
(``falwrap_rate``), in integer microseconds of the store's clock (PostgreSQL's
``clock_timestamp()``; on SQLite, this machine's wall clock, which every
process on the machine shares). A caller reserves its slot in a transaction
and sleeps out the wait on its own monotonic clock (a duration, so a clock
step during the wait changes nothing); slots go out in the order the
transactions ran, across processes.

:class:`SqlConcurrencyLimit` keeps places as lease rows (``falwrap_leases``)
with an expiry, pruned by every acquisition: a killed process's place lapses
when its lease runs out, and :meth:`Slot.renew` extends a lease during a long job.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from typing import Any

from falwrap.backends.sql import Connection, Database
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

__all__ = ["DEFAULT_LEASE_SECONDS", "SqlConcurrencyLimit", "SqlLeakyBucket"]

logger = logging.getLogger(__name__)

#: How long a concurrency place is held without renewal, unless the caller says otherwise.
DEFAULT_LEASE_SECONDS = 60.0

#: Polling a full concurrency limit starts at POLL_MIN seconds and doubles up to POLL_MAX,
#: never past the earliest lease's expiry: a freed place is seen within POLL_MAX.
POLL_MIN = 0.005
POLL_MAX = 0.1

_MICROS = 1_000_000

_LOCK_RATE = "SELECT tat_us FROM falwrap_rate WHERE namespace = ?{for_update}"
_NEW_RATE = "INSERT INTO falwrap_rate (namespace, tat_us) VALUES (?, 0) ON CONFLICT (namespace) DO NOTHING"
_SET_RATE = """INSERT INTO falwrap_rate (namespace, tat_us) VALUES (?, ?)
    ON CONFLICT (namespace) DO UPDATE SET tat_us = excluded.tat_us"""
_GIVE_BACK = "UPDATE falwrap_rate SET tat_us = ? WHERE namespace = ? AND tat_us = ?"


class SqlLeakyBucket:
    """A leaky bucket (GCRA) shared by every process using the same database and namespace.

    The behaviour of :class:`~falwrap.limiter.LeakyBucket`: FIFO (in the order the
    reserving transactions ran), exact (the interval is rounded up to a whole
    microsecond, so rounding never exceeds the rate), a timeout decided up front
    with nothing reserved, and an interrupted wait gives its slot back when no
    later reservation exists.

    Args:
        db: The store's database.
        namespace: Whose schedule (one per namespace, whatever the rate).
        rate_per_minute: Sustained grants per minute, across all processes.
        burst: Grants that may go back to back after an idle spell.

    Raises:
        ConfigurationError: a value is out of range.
    """

    def __init__(self, db: Database, namespace: str, rate_per_minute: float, burst: int = 1) -> None:
        self._rate = check_rate(rate_per_minute)
        self._burst = check_count(burst, "burst")
        self._db = db
        self._ns = namespace
        self._interval_us = max(1, math.ceil(60 * _MICROS / self._rate))
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
        return f"SqlLeakyBucket({self._db.dialect.name}, rate_per_minute={self._rate:g}, burst={self._burst})"

    def _reserve(self, max_wait_us: int | None) -> tuple[bool, int, int, int]:
        """One GCRA step in a transaction: ``(granted, wait_us, reserved_tat, previous_tat)``."""
        d = self._db.dialect
        with self._db.write() as conn:
            row = conn.execute(d.sql(_LOCK_RATE), (self._ns,)).fetchone()
            if row is None:
                # A first use: create the row, then lock it, so that two first callers
                # cannot both find nothing to lock and both take the free slot.
                conn.execute(d.sql(_NEW_RATE), (self._ns,))
                row = conn.execute(d.sql(_LOCK_RATE), (self._ns,)).fetchone()
            # The clock is read after the row lock is held, so no one reserved after this "now".
            now = d.now_us(conn)
            stored = int(row[0])
            tat = max(stored, now)
            wait = max(0, tat - self._tolerance_us - now)
            if max_wait_us is not None and wait > max_wait_us:
                return False, wait, 0, 0
            conn.execute(d.sql(_SET_RATE), (self._ns, tat + self._interval_us))
            return True, wait, tat + self._interval_us, stored

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
            BackendUnavailableError: the database could not be reached.
        """
        limit = check_timeout(timeout)
        start = time.monotonic()
        granted, wait_us, reserved, previous = self._reserve(None if limit is None else math.floor(limit * _MICROS))
        if not granted:
            raise rate_timeout(wait_us / _MICROS, limit or 0.0)
        if wait_us == 0:
            return 0.0
        # Counted from the reply, so the time the transaction took can only make the grant late.
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

        Returns:
            0.0 when a slot was granted, else the seconds until one would be
            (nothing is reserved).

        Raises:
            BackendUnavailableError: the database could not be reached.
        """
        granted, wait_us, _, _ = self._reserve(0)
        return 0.0 if granted else wait_us / _MICROS

    def _give_back(self, reserved: int, previous: int) -> None:
        # Only the newest reservation can be undone: later waiters' slots are already promised.
        try:
            with self._db.write() as conn:
                conn.execute(self._db.dialect.sql(_GIVE_BACK), (previous, self._ns, reserved))
        except BackendUnavailableError:
            logger.warning("could not give back an interrupted rate-limit slot", exc_info=True)


class _SqlSlot(Slot):
    """A lease held in a :class:`SqlConcurrencyLimit`."""

    __slots__ = ("_id", "_limit", "_released", "lease_seconds")

    def __init__(self, limit: SqlConcurrencyLimit, lease_id: str) -> None:
        self._limit = limit
        self._id = lease_id
        self._released = False
        self.lease_seconds = limit.lease_seconds

    def release(self) -> None:
        """Give the place back (idempotent).

        A database failure here is logged, not raised (``release()`` usually runs
        while another exception propagates); the lease then runs out by itself.
        """
        if self._released:
            return
        self._released = True
        self._limit._release(self._id)

    def renew(self) -> bool:
        """Extend the lease by ``lease_seconds`` from now; call it more often than that.

        Returns:
            ``True`` while the place is held; ``False`` after :meth:`release`, when
            the lease had run out and every place was taken, or when the database
            could not be reached (logged).
        """
        if self._released:
            return False
        return self._limit._renew(self._id)

    def __repr__(self) -> str:
        return f"<SqlSlot {self._id} {'released' if self._released else 'held'}>"


class SqlConcurrencyLimit:
    """At most ``max_in_flight`` jobs in flight across every process on the same database and namespace.

    Places are lease rows that run out after ``lease_seconds`` unless renewed, so a
    killed process frees its places by itself. A waiting :meth:`acquire` polls,
    from 5 ms backing off to 100 ms, never later than the earliest lease's expiry
    (not FIFO: whichever poll comes first wins). A ``KeyboardInterrupt`` landing
    while the acquiring transaction commits may leave a lease nobody holds; it
    lapses after ``lease_seconds``.

    Args:
        db: The store's database.
        namespace: Whose places.
        max_in_flight: The cap; a whole number of at least 1.
        lease_seconds: How long a place is held without :meth:`Slot.renew`.

    Raises:
        ConfigurationError: a value is out of range.
    """

    def __init__(
        self, db: Database, namespace: str, max_in_flight: int, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self._max = check_count(max_in_flight, "max_in_flight")
        self._lease_seconds = check_lease(lease_seconds)
        self._lease_us = math.ceil(self._lease_seconds * _MICROS)
        self._db = db
        self._ns = namespace
        self._lock = f"falwrap:leases:{namespace}"

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
            f"SqlConcurrencyLimit({self._db.dialect.name}, max_in_flight={self._max}, "
            f"lease_seconds={self._lease_seconds:g})"
        )

    def in_flight(self) -> int:
        """Places held right now, across all processes (lapsed leases not counted).

        Raises:
            BackendUnavailableError: the database could not be reached.
        """
        d = self._db.dialect
        with self._db.read() as conn:
            now = d.now_us(conn)
            sql = d.sql("SELECT COUNT(*) FROM falwrap_leases WHERE namespace = ? AND expires_us > ?")
            return int(conn.execute(sql, (self._ns, now)).fetchone()[0])

    def _lease(self, conn: Connection, lease_id: str, renew: bool) -> tuple[bool, float]:
        d = self._db.dialect
        d.lock(conn, self._lock)
        now = d.now_us(conn)
        ns = self._ns
        conn.execute(d.sql("DELETE FROM falwrap_leases WHERE namespace = ? AND expires_us <= ?"), (ns, now))
        expires = now + self._lease_us
        if renew:
            sql = d.sql("UPDATE falwrap_leases SET expires_us = ? WHERE namespace = ? AND lease_id = ?")
            if conn.execute(sql, (expires, ns, lease_id)).rowcount:
                return True, 0.0
        row: Any = conn.execute(
            d.sql("SELECT COUNT(*), MIN(expires_us) FROM falwrap_leases WHERE namespace = ?"), (ns,)
        ).fetchone()
        if int(row[0]) < self._max:
            conn.execute(
                d.sql("INSERT INTO falwrap_leases (namespace, lease_id, expires_us) VALUES (?, ?, ?)"),
                (ns, lease_id, expires),
            )
            return True, 0.0
        return False, (int(row[1]) - now) / _MICROS

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a free place and hold it as a lease.

        Thread-safe and process-safe.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed, 0
                takes a place only if one is free now.

        Returns:
            The held :class:`~falwrap.limits.Slot`; its ``lease_seconds`` says how
            often to :meth:`~falwrap.limits.Slot.renew` it during a long job.

        Raises:
            RateLimitTimeout: no place came free within ``timeout``; nothing is held.
            BackendUnavailableError: the database could not be reached.
        """
        limit = check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        lease_id = f"{os.getpid()}-{uuid.uuid4().hex}"
        pause = POLL_MIN
        while True:
            with self._db.write() as conn:
                held, earliest_expiry = self._lease(conn, lease_id, renew=False)
            if held:
                return _SqlSlot(self, lease_id)
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
            with self._db.write() as conn:
                conn.execute(
                    self._db.dialect.sql("DELETE FROM falwrap_leases WHERE namespace = ? AND lease_id = ?"),
                    (self._ns, lease_id),
                )
        except BackendUnavailableError:
            logger.warning(
                "could not release a concurrency lease; it frees itself after %g s", self._lease_seconds, exc_info=True
            )

    def _renew(self, lease_id: str) -> bool:
        try:
            with self._db.write() as conn:
                held, _ = self._lease(conn, lease_id, renew=True)
        except BackendUnavailableError:
            logger.warning("could not renew a concurrency lease", exc_info=True)
            return False
        return held
