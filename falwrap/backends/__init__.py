"""Where shared state lives: one URL opens the journal, the rate limiter and the concurrency cap.

``FalConfig.store_url`` (env ``FALWRAP_STORE_URL``; ``FALWRAP_REDIS_URL`` is an alias)::

    memory:                          this process only (the library's default)
    sqlite:///absolute/path.db       one machine, any number of processes (the CLI's default)
    postgresql://user@host/db        a fleet of hosts
    redis://host:port/db             a fleet of hosts

:func:`open_journal` opens only a journal; the client opens everything through
:func:`falwrap.backends.open_shared_state` (one connection pool per server, one
object that closes exactly what it opened). Each backend's driver (sqlite3,
psycopg, redis-py) is imported only when its URL is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from falwrap.errors import ConfigurationError

if TYPE_CHECKING:
    from falwrap.backends.base import Store
    from falwrap.backends.sql import Database
    from falwrap.journal import Journal

__all__ = ["migrate", "open_journal", "open_store", "scheme_of", "wipe_namespace"]

#: URL schemes and the backend each one opens.
SCHEMES = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
}


def scheme_of(url: str) -> str:
    """The backend a store URL names: ``memory``, ``sqlite``, ``postgresql`` or ``redis``.

    Raises:
        ConfigurationError: the scheme is not one falwrap knows.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    try:
        return SCHEMES[scheme]
    except KeyError:
        known = ", ".join(f"{s}:" for s in SCHEMES)
        msg = f"FALWRAP_STORE_URL={_safe(url)!r} is not valid: expected a URL starting with one of {known}."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from None


def _safe(url: str) -> str:
    """The URL without credentials, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def open_store(url: str, *, namespace: str) -> Store:
    """The store ``url`` names (see the module docstring), its keys or rows under ``namespace``.

    The caller owns it: close it with :meth:`Store.close`.

    Raises:
        ConfigurationError: the URL is invalid, its driver is not installed, or the
            server does not answer.
    """
    kind = scheme_of(url)
    if kind == "memory":
        from falwrap.backends.memory import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from falwrap.backends.sqlite import SqliteStore

        return SqliteStore.from_url(url, namespace=namespace)
    if kind == "postgresql":
        from falwrap.backends.postgresql import PostgresStore

        return PostgresStore.from_url(url, namespace=namespace)
    from falwrap.backends.redis_store import RedisStore

    return RedisStore.from_url(url, namespace=namespace)


def open_journal(url: str, *, namespace: str) -> Journal:
    """A journal alone on the store ``url`` names; closing the journal closes its store.

    Raises:
        ConfigurationError: as :func:`open_store`.
    """
    return open_store(url, namespace=namespace).journal


def wipe_namespace(url: str, namespace: str) -> None:
    """Delete everything stored under ``namespace`` at ``url`` (tests, and ``falwrap`` admin use)."""
    kind = scheme_of(url)
    if kind == "postgresql":
        from falwrap.backends.postgresql import wipe

        wipe(url, namespace)
    elif kind == "redis":
        from falwrap.backends.redis_store import wipe as wipe_redis

        wipe_redis(url, namespace)


def migrate(url: str) -> int:
    """Create or upgrade falwrap's tables at ``url`` now, ahead of a deploy; idempotent.

    Stores also do this when they open, so this is never required; it lets a
    deploy step (or a person) do it once, with the rights to create tables,
    before the application starts.

    Args:
        url: A ``sqlite:///absolute/path.db`` or ``postgresql://...`` store URL.

    Returns:
        The schema version now in place.

    Raises:
        ConfigurationError: the URL is not a SQL store, or the database cannot be
            opened or holds a newer schema.
    """
    from falwrap.backends.sql import apply_migrations

    kind = scheme_of(url)
    if kind == "sqlite":
        from falwrap.backends.sqlite import open_database as open_sqlite

        db: Database = open_sqlite(url)
    elif kind == "postgresql":
        from falwrap.backends.postgresql import open_database as open_postgres

        db = open_postgres(url)
    else:
        msg = f"migrate() needs a sqlite: or postgresql: store URL; {kind} stores have no schema."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
    try:
        return apply_migrations(db)
    finally:
        db.close()
