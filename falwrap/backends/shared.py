"""Opening a client's shared state from its configuration, in one place, and closing exactly that.

:func:`open_shared_state` reads ``FalConfig.store_url`` once and opens one store
(one connection pool per server) for the journal, the rate limiter and the
concurrency cap. What a caller passes in (its own ledger or limiter) is used
as it is and never closed here: whoever opens a resource closes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from falwrap.backends import open_store, scheme_of
from falwrap.backends.base import Store
from falwrap.backends.memory import MemoryStore
from falwrap.config import FalConfig
from falwrap.errors import ConfigurationError
from falwrap.ledger import CostLedger, JournalLedger, Ledger
from falwrap.limiter import Limiter
from falwrap.limits import check_count, check_rate

__all__ = ["SharedState", "open_shared_state"]

logger = logging.getLogger("falwrap")


@attrs.define
class SharedState:
    """What a client shares with other threads (and, through a store, other processes).

    Attributes:
        store: The store the configuration names (its journal backs ``ledger`` unless one was given).
        ledger: The money view: budget, daily cost, stats.
        limiter: The rate limiter and concurrency cap.
    """

    store: Store
    ledger: JournalLedger
    limiter: Limiter
    _closers: list[Callable[[], None]] = attrs.field(factory=list, repr=False)

    def close(self) -> None:
        """Close what :func:`open_shared_state` opened, newest first; failures are logged, not raised."""
        while self._closers:
            close = self._closers.pop()
            try:
                close()
            except Exception:
                logger.exception("[falwrap] closing shared state failed")


def open_shared_state(
    config: FalConfig,
    *,
    ledger: Ledger | None = None,
    limiter: Limiter | None = None,
) -> SharedState:
    """Open the store ``config.store_url`` names and the ledger and limiter on it.

    Args:
        config: The client's configuration (store URL, budget, rate, concurrency cap).
        ledger: A ledger to use instead of one on the store (not closed by the result).
        limiter: A limiter to use instead of the store's (not closed by the result).

    Raises:
        ConfigurationError: the store URL is invalid, its driver is missing or it does not
            answer; or ``ledger`` is not a journal-backed ledger.
    """
    closers: list[Callable[[], None]] = []
    kind = scheme_of(config.store_url)
    if kind == "memory":
        own = ledger if ledger is not None else CostLedger(daily_budget_usd=config.daily_budget_usd)
        if not isinstance(own, JournalLedger):
            msg = "FalClient(ledger=...) must be a CostLedger, RedisLedger or another JournalLedger."
            raise ConfigurationError(msg, variable="ledger")
        store: Store = MemoryStore(own.journal)  # type: ignore[arg-type]
    else:
        store = open_store(config.store_url, namespace=config.key_fingerprint)
        closers.append(store.close)
        own = ledger if ledger is not None else JournalLedger(store.journal, daily_budget_usd=config.daily_budget_usd)
        if not isinstance(own, JournalLedger):
            store.close()
            msg = "FalClient(ledger=...) must be a CostLedger, RedisLedger or another JournalLedger."
            raise ConfigurationError(msg, variable="ledger")
    if limiter is None:
        rate = config.rate_limit
        try:
            bucket = store.rate_limiter(check_rate(rate.requests_per_minute), check_count(rate.burst, "burst"))
            cap = (
                None
                if rate.max_concurrent is None
                else store.concurrency_limiter(check_count(rate.max_concurrent, "max_concurrent"))
            )
        except BaseException:
            for close in reversed(closers):
                close()
            raise
        limiter = Limiter(bucket, cap)
    return SharedState(store, own, limiter, closers)
