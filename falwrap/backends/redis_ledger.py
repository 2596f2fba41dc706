"""RedisLedger: the :class:`~falwrap.ledger.Ledger` view of a journal in Redis, shared by processes.

Every process that builds a ``RedisLedger`` on the same Redis and namespace sees
one daily spend, one set of budget holds and one set of stats. It is a
:class:`~falwrap.ledger.JournalLedger` over a
:class:`~falwrap.backends.redis_journal.RedisJournal`, so it behaves exactly as
:class:`~falwrap.ledger.CostLedger` does (the ledger contract suite runs both);
the keys, their retention and the clocks are described in
:mod:`falwrap.backends.redis_journal`.

redis-py is imported only for type checking: it is needed at run time only to
build the client you pass in (``pip install 'falwrap[redis]'``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from falwrap.backends.redis_journal import DEFAULT_DAY_TTL, DEFAULT_JOB_TTL, RedisJournal
from falwrap.ledger import DEFAULT_RESERVATION_TTL, JournalLedger
from falwrap.records import utc_now

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["RedisLedger"]


class RedisLedger(JournalLedger):
    """A ledger whose jobs, records, totals and budget holds live in Redis, shared by many processes.

    Same interface and semantics as :class:`~falwrap.ledger.CostLedger`:
    ``record(rec, reservation=hold)`` adds the cost and ends the hold in one Lua
    script; ``settle()``/``release()`` only end holds. Thread-safe and process-safe.

    Args:
        redis: A redis-py ``Redis`` client (bytes or decoded responses both work). It stays
            yours: :meth:`close` does not close it.
        namespace: Keys live under ``falwrap:<namespace>:``; processes sharing it share the ledger.
        daily_budget_usd: Cap on each UTC day's spend plus open holds; ``None`` for no cap.
            It is this instance's setting: give every process the same value.
        max_records: How many recent records the shared list keeps.
        clock: Returns the current aware datetime; decides "today" and when holds lapse
            (keep hosts' clocks synchronised).
        reservation_ttl: Seconds after which a hold lapses by itself, so a crashed process's
            reservations free the budget; ``None`` never (default 15 minutes).
        day_ttl: Seconds each day's totals are kept (default 35 days).
        duration_window: How many recent durations p50/p95 use, overall and per model.
        job_ttl: Seconds a finished job and its result are kept (default 7 days).
        metrics: Deprecated and ignored: metrics are observers of the client, not the ledger.

    Raises:
        TypeError, ValueError: An argument is out of range.
    """

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        daily_budget_usd: Decimal | None = None,
        max_records: int = 10_000,
        clock: Callable[[], datetime] = utc_now,
        reservation_ttl: float | None = DEFAULT_RESERVATION_TTL,
        day_ttl: int = DEFAULT_DAY_TTL,
        duration_window: int = 1000,
        job_ttl: int = DEFAULT_JOB_TTL,
        metrics: bool | None = None,
    ) -> None:
        if metrics is not None:
            warnings.warn(
                "RedisLedger(metrics=...) is deprecated and ignored: FalClient reports every call to its "
                "observers (the log line and Prometheus metrics), the ledger only stores.",
                DeprecationWarning,
                stacklevel=2,
            )
        journal = RedisJournal(
            redis,
            namespace=namespace,
            max_records=max_records,
            duration_window=duration_window,
            day_ttl=day_ttl,
            job_ttl=job_ttl,
        )
        super().__init__(journal, daily_budget_usd=daily_budget_usd, clock=clock, reservation_ttl=reservation_ttl)

    @property
    def redis(self) -> Redis:
        """The redis-py client the ledger uses."""
        return self._redis_journal.client

    @property
    def namespace(self) -> str:
        """The namespace keys live under."""
        return self._redis_journal.namespace

    @property
    def max_records(self) -> int:
        """How many recent records the shared list keeps."""
        return self._redis_journal.max_records

    @property
    def _redis_journal(self) -> RedisJournal:
        journal = self.journal
        assert isinstance(journal, RedisJournal)  # built by __init__
        return journal
