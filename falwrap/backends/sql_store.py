"""What every SQL store is: a journal and the two limits on one database, opened with its schema migrated.

:class:`SqlStore` is the store of :mod:`falwrap.backends.sqlite` and
:mod:`falwrap.backends.postgresql` alike; each supplies its database, how to name
it in messages, and what a failed migration means for the caller.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from falwrap.backends.sql import Database, apply_migrations
from falwrap.backends.sql_journal import SqlJournal
from falwrap.backends.sql_limits import SqlConcurrencyLimit, SqlLeakyBucket
from falwrap.backends.store_limits import DEFAULT_LEASE_SECONDS
from falwrap.errors import ConfigurationError
from falwrap.limits import ConcurrencyLimiter, RateLimiter

__all__ = ["SqlStore"]

_D = TypeVar("_D", bound=Database)
_S = TypeVar("_S", bound="SqlStore[Any]")


class SqlStore(abc.ABC, Generic[_D]):
    """A :class:`~falwrap.backends.sql_journal.SqlJournal` and the SQL limits on one database.

    Thread-safe, and safe across every process using the database. Open one with
    the subclass's ``from_url``.

    Args:
        db: The database, its schema migrated.
        namespace: The namespace rows are written under.
    """

    def __init__(self, db: _D, namespace: str) -> None:
        self._db = db
        self._namespace = namespace
        self._journal = SqlJournal(db, namespace, on_close=self.close)

    @classmethod
    def _open(cls: type[_S], namespace: str, open_db: Callable[[], Any]) -> _S:
        """Check ``namespace``, then open the database and bring its schema up to date.

        The namespace is checked before anything is opened; the database is closed
        again when its migration fails.

        Raises:
            ConfigurationError: the namespace is empty, the database cannot be opened
                or migrated, or its schema is newer than this falwrap.
        """
        if not isinstance(namespace, str) or not namespace:
            msg = "The store namespace must be a non-empty string (a hash of the API key)."
            raise ConfigurationError(msg, variable="namespace")
        db = open_db()
        try:
            apply_migrations(db, where=cls._where(db))
        except BaseException as exc:
            db.close()
            failure = cls._migration_failure(db, exc) if isinstance(exc, Exception) else None
            if failure is None:
                raise
            raise failure from exc
        return cls(db, namespace)

    @classmethod
    @abc.abstractmethod
    def _where(cls, db: _D) -> str:
        """How messages and the repr name ``db`` (never with credentials)."""

    @classmethod
    @abc.abstractmethod
    def _migration_failure(cls, db: _D, exc: Exception) -> ConfigurationError | None:
        """The error to raise when migrating ``db`` failed with ``exc``, or ``None`` to let ``exc`` through."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where(self._db)!r}, namespace={self._namespace!r})"

    @property
    def journal(self) -> SqlJournal:
        """The journal of jobs, holds and records."""
        return self._journal

    def rate_limiter(self, rate_per_minute: float, burst: int) -> RateLimiter:
        """The namespace's GCRA schedule in the database, on the store's clock, at this rate.

        Raises:
            ConfigurationError: a value is out of range.
        """
        return SqlLeakyBucket(self._db, self._namespace, rate_per_minute, burst)

    def concurrency_limiter(
        self, max_in_flight: int, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> ConcurrencyLimiter:
        """The namespace's cap on jobs in flight across every process on the database.

        Places lapse after ``lease_seconds`` unless renewed.

        Raises:
            ConfigurationError: a value is out of range.
        """
        return SqlConcurrencyLimit(self._db, self._namespace, max_in_flight, lease_seconds)

    def close(self) -> None:
        """Close this store's connections; idempotent."""
        self._db.close()
