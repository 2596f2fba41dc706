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

Both run the waiting, the deadlines and the slots of :mod:`falwrap.backends.store_limits`;
this module holds their transactions.
"""

from __future__ import annotations

from typing import Any

from falwrap.backends.sql import Database
from falwrap.backends.store_limits import DEFAULT_LEASE_SECONDS, MICROS, StoreConcurrencyLimit, StoreLeakyBucket

__all__ = ["SqlConcurrencyLimit", "SqlLeakyBucket"]

_LOCK_RATE = "SELECT tat_us FROM falwrap_rate WHERE namespace = ?{for_update}"
_NEW_RATE = "INSERT INTO falwrap_rate (namespace, tat_us) VALUES (?, 0) ON CONFLICT (namespace) DO NOTHING"
_SET_RATE = """INSERT INTO falwrap_rate (namespace, tat_us) VALUES (?, ?)
    ON CONFLICT (namespace) DO UPDATE SET tat_us = excluded.tat_us"""
_GIVE_BACK = "UPDATE falwrap_rate SET tat_us = ? WHERE namespace = ? AND tat_us = ?"


class SqlLeakyBucket(StoreLeakyBucket):
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
        super().__init__(rate_per_minute, burst)
        self._db = db
        self._ns = namespace

    def _where(self) -> str:
        return self._db.dialect.name

    def _reserve(self, max_wait_us: int | None) -> tuple[bool, int, int, int]:
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

    def _undo(self, reserved: int, previous: int) -> None:
        with self._db.write() as conn:
            conn.execute(self._db.dialect.sql(_GIVE_BACK), (previous, self._ns, reserved))


class SqlConcurrencyLimit(StoreConcurrencyLimit):
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

    SLOT_NAME = "SqlSlot"

    def __init__(
        self, db: Database, namespace: str, max_in_flight: int, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        super().__init__(max_in_flight, lease_seconds)
        self._db = db
        self._ns = namespace
        self._lock = f"falwrap:leases:{namespace}"

    def _where(self) -> str:
        return self._db.dialect.name

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

    def _take(self, lease_id: str, renew: bool) -> tuple[bool, float]:
        d = self._db.dialect
        ns = self._ns
        with self._db.write() as conn:
            d.lock(conn, self._lock)
            now = d.now_us(conn)
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
            return False, (int(row[1]) - now) / MICROS

    def _drop(self, lease_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                self._db.dialect.sql("DELETE FROM falwrap_leases WHERE namespace = ? AND lease_id = ?"),
                (self._ns, lease_id),
            )
