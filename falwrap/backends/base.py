"""The one interface every backend implements: a :class:`Store` opened from a URL.

A store is one server's shared state behind one connection pool: the journal
(jobs, holds, records) and the two limits (a GCRA rate limiter and a
concurrency cap). Whoever opens a store closes it; :meth:`Store.close` closes
exactly what the store opened.

To add a backend: a module in this package with a ``Store`` class (its
``from_url(url, namespace=...)`` classmethod), a ``Journal`` class passing
``tests/contract/test_journal.py``, limits passing ``tests/contract/test_rate_limiter.py``
and ``test_concurrency.py``, and a line in :func:`falwrap.backends.open_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from falwrap.journal import Journal
    from falwrap.limits import ConcurrencyLimiter, RateLimiter

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """One server's shared state: the journal and the limits, on one connection pool.

    Every part is thread-safe; the shared stores are safe across processes and hosts.
    Keys (or rows) live under the namespace the store was opened with: a hash of
    the API key, so accounts sharing a server never mix.
    """

    @property
    def journal(self) -> Journal:
        """The journal of jobs, holds and records."""
        ...

    def rate_limiter(self, rate_per_minute: float, burst: int) -> RateLimiter:
        """The namespace's GCRA rate limiter at this rate (one schedule per namespace).

        Raises:
            ConfigurationError: a value is out of range.
        """
        ...

    def concurrency_limiter(self, max_in_flight: int, *, lease_seconds: float = 60.0) -> ConcurrencyLimiter:
        """The namespace's cap on jobs in flight; places held by a dead process lapse.

        Args:
            max_in_flight: The cap.
            lease_seconds: How long a shared store keeps a place without :meth:`Slot.renew`
                (so a killed process's place lapses after it); in-process places never lapse.

        Raises:
            ConfigurationError: a value is out of range.
        """
        ...

    def close(self) -> None:
        """Close what this store opened (its connections); idempotent."""
        ...
