"""RedisStore: the journal and both limits on one Redis connection pool (``redis://``, ``rediss://``, ``unix://``).

Every key lives under ``falwrap:<namespace>:`` (the namespace is a hash of the
API key, so accounts sharing a server never mix)::

    falwrap:<ns>:rate        the GCRA rate limiter's state (RedisLeakyBucket)
    falwrap:<ns>:inflight    the concurrency cap's leases (RedisConcurrencyLimit)
    falwrap:<ns>:jobs:...    handles kept by the deprecated falwrap.contrib.web.RedisJobStore
    falwrap:<ns>:...         the journal (see falwrap.backends.redis_journal)

:func:`wipe` deletes them all.
"""

from __future__ import annotations

import threading

import redis

from falwrap.backends.redis_errors import describe, journal_unavailable
from falwrap.backends.redis_journal import RedisJournal
from falwrap.backends.redis_limiter import RedisConcurrencyLimit, RedisLeakyBucket, redis_client_from_url
from falwrap.errors import ConfigurationError
from falwrap.limits import ConcurrencyLimiter, RateLimiter

__all__ = ["RedisStore", "wipe"]

#: Keys deleted per round trip by :func:`wipe`.
_WIPE_BATCH = 500


def _prefix(namespace: str) -> str:
    if not isinstance(namespace, str) or not namespace:
        msg = f"namespace must be a non-empty str, got {namespace!r}"
        raise ValueError(msg)
    return f"falwrap:{namespace}:"


class RedisStore:
    """One Redis server's shared state for one namespace, on one redis-py client (one connection pool).

    Thread-safe and fork-safe (redis-py's pool reconnects in a child process).

    Args:
        client: A redis-py ``Redis`` client; every part of the store uses it.
        namespace: Keys live under ``falwrap:<namespace>:``.
        close_client: Whether :meth:`close` closes ``client`` (true for a store
            opened by :meth:`from_url`; a client handed in stays its owner's).

    Raises:
        ValueError: ``namespace`` is empty.
    """

    def __init__(self, client: redis.Redis, *, namespace: str, close_client: bool = False) -> None:
        self._prefix = _prefix(namespace)
        self._namespace = namespace
        self._client = client
        self._close_client = close_client
        self._closed = False
        self._lock = threading.Lock()
        self._journal = RedisJournal(client, namespace=namespace, on_close=self.close)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> RedisStore:
        """Open the store at ``url`` (a ``redis://``, ``rediss://`` or ``unix://`` URL) and check it answers.

        The client has short socket timeouts and one retry, so a failing server
        is reported within about a second rather than after redis-py's default retries.

        Raises:
            ConfigurationError: the URL is invalid or the server does not answer.
            ValueError: ``namespace`` is empty.
        """
        _prefix(namespace)
        client = redis_client_from_url(url, variable="FALWRAP_STORE_URL")
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            msg = (
                f"Redis at {describe(client)} is not answering ({type(exc).__name__}: {exc}). "
                "Start it, or fix FALWRAP_STORE_URL (or FALWRAP_REDIS_URL)."
            )
            raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from exc
        return cls(client, namespace=namespace, close_client=True)

    def __repr__(self) -> str:
        return f"RedisStore({describe(self._client)}, namespace={self._namespace!r})"

    @property
    def client(self) -> redis.Redis:
        """The one redis-py client every part of this store uses."""
        return self._client

    @property
    def namespace(self) -> str:
        """The namespace keys live under."""
        return self._namespace

    def key(self, *parts: str) -> str:
        """The full key of ``parts`` under this store's namespace (``key("rate")`` is ``falwrap:<ns>:rate``)."""
        return self._prefix + ":".join(parts)

    @property
    def journal(self) -> RedisJournal:
        """The journal of jobs, holds and records; closing it closes the store."""
        return self._journal

    def rate_limiter(self, rate_per_minute: float, burst: int) -> RateLimiter:
        """The namespace's :class:`~falwrap.backends.redis_limiter.RedisLeakyBucket` at this rate.

        Raises:
            ConfigurationError: a value is out of range.
        """
        return RedisLeakyBucket(self._client, self.key("rate"), rate_per_minute, burst, check=False)

    def concurrency_limiter(self, max_in_flight: int, *, lease_seconds: float = 60.0) -> ConcurrencyLimiter:
        """The namespace's :class:`~falwrap.backends.redis_limiter.RedisConcurrencyLimit`.

        Args:
            max_in_flight: The cap, across every process on the namespace.
            lease_seconds: How long a place is held without renewal (a dead process's lapses).

        Raises:
            ConfigurationError: a value is out of range.
        """
        return RedisConcurrencyLimit(
            self._client, self.key("inflight"), max_in_flight, lease_seconds=lease_seconds, check=False
        )

    def close(self) -> None:
        """Close the connection pool if this store opened it; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._close_client:
            self._client.close()


def wipe(url: str, namespace: str) -> None:
    """Delete every key of ``namespace`` at ``url``: the journal, the limits, the web job store.

    Raises:
        ConfigurationError: the URL is invalid.
        BackendUnavailableError: Redis failed.
    """
    # Glob characters in the namespace are matched literally.
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in _prefix(namespace)) + "*"
    client = redis_client_from_url(url, variable="FALWRAP_STORE_URL")
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=_WIPE_BATCH):
            batch.append(key)
            if len(batch) >= _WIPE_BATCH:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    except redis.RedisError as exc:
        raise journal_unavailable(client, exc) from exc
    finally:
        client.close()
