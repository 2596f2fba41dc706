"""The ``postgresql:`` store: the journal and the limits in PostgreSQL, shared by a fleet of hosts.

``postgresql://user:password@host:5432/dbname`` (``postgres://`` too; any libpq
parameter may be added as a query, e.g. ``?sslmode=require``). Install with
``pip install 'falwrap[postgresql]'`` (psycopg 3 and psycopg-pool). The store is a
:class:`~falwrap.backends.sql_store.SqlStore`; the statements are those of
:mod:`falwrap.backends.sql_journal` and :mod:`falwrap.backends.sql_limits`.

One :class:`psycopg_pool.ConnectionPool` per store, shared by the journal and the
limits. Transactions run at READ COMMITTED, the server's default:

* A job's changes lock its row (``SELECT ... FOR UPDATE``), so concurrent
  settlements of one job, on any host, settle it once.
* Budget checks and idempotency claims take a transaction-scoped advisory lock
  per namespace (``pg_advisory_xact_lock``), then read spend and holds in one
  statement. A check sums many rows and must also see rows that do not exist
  yet (the next hold), which row locks cannot cover; SERIALIZABLE would cover it
  but fail and retry under exactly the contention budgets see. The advisory lock
  serialises only the checks of one namespace, for the length of one short
  transaction, is released by commit or rollback (also when a client dies), and
  needs no row of its own to keep updated.
* The GCRA schedule row is locked ``FOR UPDATE`` and only then read against the
  server's ``clock_timestamp()``: every host uses one clock, so clock skew between
  hosts cannot loosen the rate. Concurrency leases are counted under an advisory
  lock per namespace, against the same clock.

Failures: at open (bad URL, server not answering, no rights to create tables)
:class:`~falwrap.errors.ConfigurationError`; at call time
:class:`~falwrap.errors.BackendUnavailableError`, within :data:`CALL_TIMEOUT`:
the server ends statements after :data:`STATEMENT_TIMEOUT` and lock waits after
:data:`LOCK_TIMEOUT`, and a server that stops answering altogether (a hung host,
a dead network path) is given up on by the client after :data:`CALL_TIMEOUT`,
that connection being discarded. A call first waits at most :data:`POOL_TIMEOUT`
for a pooled connection when all of them are busy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import RV, PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The error Connection.wait() documents for its timeout; psycopg names it private.
from psycopg.errors import _WaitTimeout
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from falwrap.backends.sql import Dialect
from falwrap.backends.sql_store import SqlStore
from falwrap.errors import BackendUnavailableError, ConfigurationError
from falwrap.limits import check_count

__all__ = [
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
    "LOCK_TIMEOUT",
    "POOL_TIMEOUT",
    "POSTGRES",
    "STATEMENT_TIMEOUT",
    "PostgresDatabase",
    "PostgresStore",
    "open_database",
    "wipe",
]

POSTGRES = Dialect(
    name="postgresql",
    placeholder="%s",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    for_update=" FOR UPDATE",
    clock_sql="SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
    lock_sql="SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
)

#: Seconds to establish a connection (libpq's smallest useful value).
CONNECT_TIMEOUT = 2
#: Seconds the server lets one statement run. Every statement here touches a few rows by index.
STATEMENT_TIMEOUT = 1.8
#: Seconds a statement waits for a row or advisory lock. Transactions hold them for a few
#: milliseconds (a commit's fsync included), so only a long queue of budget checks on one
#: namespace, or a stuck holder, comes near it. Below CALL_TIMEOUT, so the server reports
#: it and the connection stays usable.
LOCK_TIMEOUT = 1.5
#: Seconds the server keeps a transaction whose client went silent (frees its locks if a host dies).
IDLE_IN_TRANSACTION_TIMEOUT = 10.0
#: Seconds the client waits for any one answer before giving the server up: a hung server
#: (or network path) enforces no statement_timeout.
CALL_TIMEOUT = 2.0
#: Seconds a call waits for a free pooled connection when every one is busy (the pool
#: replaces a connection lost to a hung server only as fast as that server answers).
POOL_TIMEOUT = CALL_TIMEOUT
#: Connections per store unless ``max_connections`` says otherwise.
DEFAULT_MAX_CONNECTIONS = 10

_TABLES = (
    "falwrap_jobs",
    "falwrap_holds",
    "falwrap_owners",
    "falwrap_records",
    "falwrap_totals",
    "falwrap_rate",
    "falwrap_leases",
)

_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)


class _TimedConnection(psycopg.Connection[Any]):
    """A connection that gives up on a server that stops answering, after :data:`CALL_TIMEOUT`.

    psycopg waits for an answer as long as it takes; the server-side timeouts do
    not help when the server (or the network to it) hangs. Every exchange goes
    through :meth:`wait`, which takes a timeout: this gives it one. The
    connection's protocol state is unknown after such a timeout, so it is closed
    and the pool discards it.
    """

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        """Run ``gen`` on the connection, at most ``timeout`` (default :data:`CALL_TIMEOUT`) seconds."""
        try:
            return super().wait(gen, interval=interval, timeout=CALL_TIMEOUT if timeout is None else timeout)
        except _WaitTimeout as exc:
            self.close()
            msg = f"no answer from the server within {CALL_TIMEOUT:g} s"
            raise psycopg.OperationalError(msg) from exc


def _conninfo(url: str) -> tuple[str, str]:
    """The connection string for ``url`` with falwrap's timeouts, and a description without credentials."""
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.Error as exc:
        msg = f"FALWRAP_STORE_URL is not a valid PostgreSQL URL ({exc}); expected postgresql://user@host:5432/dbname."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from None
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    params.setdefault("application_name", "falwrap")
    settings = (
        f"-c statement_timeout={math.ceil(STATEMENT_TIMEOUT * 1000)} "
        f"-c lock_timeout={math.ceil(LOCK_TIMEOUT * 1000)} "
        f"-c idle_in_transaction_session_timeout={math.ceil(IDLE_IN_TRANSACTION_TIMEOUT * 1000)}"
    )
    params["options"] = f"{params['options']} {settings}" if params.get("options") else settings
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname') or ''}"
    return make_conninfo(**params), where


def _unavailable(where: str, exc: BaseException) -> BackendUnavailableError:
    msg = (
        f"The PostgreSQL store at {where} could not be reached or did not answer "
        f"({type(exc).__name__}: {exc}); the operation did not take place."
    )
    return BackendUnavailableError(msg)


class PostgresDatabase:
    """One pool of connections to a PostgreSQL database, handing out transactions.

    Args:
        pool: The open pool (autocommit connections of :class:`_TimedConnection`).
        where: ``host:port/dbname`` for messages.
    """

    dialect = POSTGRES

    def __init__(self, pool: ConnectionPool[Any], where: str) -> None:
        self._pool = pool
        self.where = where

    @contextmanager
    def write(self, *locks: str) -> Iterator[psycopg.Connection[Any]]:
        """A transaction holding the advisory locks named ``locks``; committed when the block ends cleanly."""
        try:
            with self._pool.connection(timeout=POOL_TIMEOUT) as conn, conn.transaction():
                for name in locks:
                    conn.execute(POSTGRES.lock_sql or "", (name,))
                yield conn
        except _UNREACHABLE as exc:
            raise _unavailable(self.where, exc) from exc

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode: each statement sees the last commit."""
        try:
            with self._pool.connection(timeout=POOL_TIMEOUT) as conn:
                yield conn
        except _UNREACHABLE as exc:
            raise _unavailable(self.where, exc) from exc

    def close(self) -> None:
        """Close the pool and its connections; idempotent."""
        self._pool.close()


def open_database(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> PostgresDatabase:
    """A pool on the database ``url`` names, checked to answer (schema not migrated).

    Raises:
        ConfigurationError: the URL is invalid or the server does not answer.
    """
    conninfo, where = _conninfo(url)
    try:
        # A direct first connection, for the server's own reason when it fails.
        _TimedConnection.connect(conninfo).close()
    except psycopg.Error as exc:
        msg = (
            f"PostgreSQL at {where} is not answering ({type(exc).__name__}: {str(exc).strip()}). "
            "Start it, or fix FALWRAP_STORE_URL."
        )
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from None
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_connections,
        kwargs={"autocommit": True},
        connection_class=_TimedConnection,
        timeout=POOL_TIMEOUT,
        name=f"falwrap {where}",
        open=False,
    )
    pool.open()
    return PostgresDatabase(pool, where)


class PostgresStore(SqlStore[PostgresDatabase]):
    """The ``postgresql:`` store: a :class:`~falwrap.backends.sql_journal.SqlJournal` and the SQL limits on one pool.

    Thread-safe, and safe across processes and hosts. Open it with :meth:`from_url`.

    Args:
        db: The database, its schema migrated.
        namespace: The namespace rows are written under.
    """

    @classmethod
    def from_url(cls, url: str, *, namespace: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> PostgresStore:
        """Open the database ``url`` names, creating or upgrading falwrap's tables.

        Args:
            url: ``postgresql://user:password@host:port/dbname``.
            namespace: The namespace rows are written under (a hash of the API key).
            max_connections: The pool's size: the most statements this process runs at once.

        Returns:
            The store; close it with :meth:`close`.

        Raises:
            ConfigurationError: the URL or a value is invalid, the server does not answer,
                the tables cannot be created, or the schema is newer than this falwrap.
        """

        def open_db() -> PostgresDatabase:
            check_count(max_connections, "max_connections")
            return open_database(url, max_connections=max_connections)

        return cls._open(namespace, open_db)

    @classmethod
    def _where(cls, db: PostgresDatabase) -> str:
        return db.where

    @classmethod
    def _migration_failure(cls, db: PostgresDatabase, exc: Exception) -> ConfigurationError | None:
        if not isinstance(exc, (BackendUnavailableError, psycopg.Error)):
            return None
        msg = f"The falwrap tables in PostgreSQL at {db.where} could not be created or upgraded ({exc})."
        return ConfigurationError(msg, variable="FALWRAP_STORE_URL")


def wipe(url: str, namespace: str) -> None:
    """Delete every row stored under ``namespace`` (all tables, one transaction); other namespaces stay.

    Raises:
        ConfigurationError: the URL is invalid or the server does not answer.
    """
    conninfo, where = _conninfo(url)
    try:
        with _TimedConnection.connect(conninfo, autocommit=True) as conn, conn.transaction():
            present = conn.execute(
                "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL", (list(_TABLES),)
            ).fetchall()
            for (table,) in present:
                conn.execute(sql.SQL("DELETE FROM {} WHERE namespace = %s").format(sql.Identifier(table)), (namespace,))
    except psycopg.Error as exc:
        msg = f"PostgreSQL at {where} could not be wiped ({type(exc).__name__}: {exc})."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from exc
