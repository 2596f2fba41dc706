"""What the SQL stores share: the schema and its migrations, the dialects, and the database interface.

SQLite (:mod:`falwrap.backends.sqlite`) and PostgreSQL (:mod:`falwrap.backends.postgresql`)
run the same statements (:mod:`falwrap.backends.sql_journal` and
:mod:`falwrap.backends.sql_limits`); what differs between them fits in a
:class:`Dialect`: the placeholder, the auto-numbered key, row locks, the
server clock and named locks. Each backend supplies a :class:`Database` that
hands out connections inside transactions.

Values are stored so that both dialects read them back exactly: money as integer
micro-dollars, times as integer microseconds since the Unix epoch (UTC), days
as ISO ``YYYY-MM-DD`` text, JSON payloads and decimals as text. Every table
carries the ``namespace`` column (a hash of the API key), so accounts sharing
a database never mix.

Schema changes are migrations, numbered and applied in order when a store
opens, under a lock (SQLite's write lock, a PostgreSQL advisory lock), so that
processes opening a fresh database at once apply each step exactly once. Run
them ahead of a deploy with :func:`falwrap.backends.migrate` (``falwrap.backends.migrate(url)``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

import attrs

from falwrap.errors import ConfigurationError

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Connection",
    "Database",
    "Dialect",
    "Migration",
    "apply_migrations",
    "day_text",
    "from_us",
    "schema_version",
    "to_us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """Integer microseconds since the epoch of an aware datetime (exact, unlike a float timestamp)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_us(micros: int) -> datetime:
    """The aware UTC datetime of :func:`to_us` microseconds."""
    return _EPOCH + timedelta(microseconds=micros)


def day_text(day: date) -> str:
    """A UTC day as stored: ``YYYY-MM-DD`` (sorts as text)."""
    return day.isoformat()


class Cursor(Protocol):
    """The part of a DB-API cursor the SQL stores use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A connection inside a transaction: ``execute`` returns a cursor (sqlite3 and psycopg alike)."""

    def execute(self, sql: Any, params: Sequence[Any] = ..., /) -> Any: ...


@attrs.frozen
class Dialect:
    """How one database spells what the shared statements need.

    Args:
        name: ``sqlite`` or ``postgresql``.
        placeholder: The parameter marker (statements are written with ``?``).
        serial: The column type of an auto-numbered primary key.
        for_update: Appended to a ``SELECT`` that must lock the rows it reads
            (empty for SQLite, whose write transactions already hold the database).
        clock_sql: A statement returning the server's clock in integer microseconds,
            or ``None`` when the local clock is the store's clock.
        lock_sql: A statement taking a transaction-scoped lock on a name (one
            parameter), or ``None`` when write transactions are serial anyway.
    """

    name: str
    placeholder: str
    serial: str
    for_update: str
    clock_sql: str | None
    lock_sql: str | None

    @functools.cache  # noqa: B019 - dialects are two module constants, never freed
    def sql(self, statement: str) -> str:
        """``statement`` with this dialect's placeholders and types (cached)."""
        text = statement.replace("{serial}", self.serial).replace("{for_update}", self.for_update)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def now_us(self, conn: Connection) -> int:
        """The store's clock in integer microseconds: the server's, or this machine's."""
        if self.clock_sql is None:
            return time.time_ns() // 1000
        return int(conn.execute(self.clock_sql).fetchone()[0])

    def lock(self, conn: Connection, name: str) -> None:
        """Hold the lock ``name`` until the transaction ends (a no-op where writes are serial)."""
        if self.lock_sql is not None:
            conn.execute(self.lock_sql, (name,))


class Database(Protocol):
    """A backend's connections, handed out inside transactions.

    ``write(*locks)`` opens a write transaction that holds the named locks (see
    :meth:`Dialect.lock`) and commits when the block ends without an exception;
    ``read()`` a connection for reads. Both raise
    :class:`~falwrap.errors.BackendUnavailableError` when the database cannot be
    reached or does not answer in time.
    """

    dialect: Dialect

    def write(self, *locks: str) -> AbstractContextManager[Connection]: ...

    def read(self) -> AbstractContextManager[Connection]: ...

    def close(self) -> None: ...


# --- Schema ---------------------------------------------------------------------------------------


@attrs.frozen
class Migration:
    """One numbered schema change: statements run in one transaction (DDL is transactional in both)."""

    version: int
    description: str
    statements: tuple[str, ...]


_CHARGED = "('running', 'unknown', 'succeeded', 'failed', 'cancelled')"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the journal: jobs, budget holds, owners' heartbeats, call records",
        (
            """CREATE TABLE falwrap_jobs (
                seq {serial},
                namespace TEXT NOT NULL,
                job_id TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                operation TEXT NOT NULL,
                arguments TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                estimate BIGINT NOT NULL,
                owner TEXT,
                created_us BIGINT NOT NULL,
                day TEXT NOT NULL,
                state TEXT NOT NULL,
                cost BIGINT NOT NULL,
                cost_final BOOLEAN NOT NULL DEFAULT FALSE,
                billable_units TEXT,
                idempotency_key TEXT,
                key_expires_us BIGINT,
                webhook_url TEXT,
                request_id TEXT,
                status_url TEXT,
                response_url TEXT,
                cancel_url TEXT,
                gateway_request_id TEXT,
                accepted_us BIGINT,
                finished_us BIGINT,
                result TEXT,
                error_code TEXT,
                error_message TEXT,
                recorded BOOLEAN NOT NULL DEFAULT FALSE,
                UNIQUE (namespace, job_id)
            )""",
            "CREATE INDEX falwrap_jobs_request ON falwrap_jobs (namespace, request_id)",
            "CREATE INDEX falwrap_jobs_created ON falwrap_jobs (namespace, created_us)",
            """CREATE INDEX falwrap_jobs_key ON falwrap_jobs (namespace, idempotency_key, seq)
                WHERE idempotency_key IS NOT NULL""",
            # Open jobs and provisional costs: what unsettled() scans (every open job has cost_final false).
            "CREATE INDEX falwrap_jobs_unsettled ON falwrap_jobs (namespace, created_us) WHERE cost_final = FALSE",
            # Estimates held by jobs still submitting: the budget check sums them.
            "CREATE INDEX falwrap_jobs_submitting ON falwrap_jobs (namespace) WHERE state = 'submitting'",
            """CREATE TABLE falwrap_holds (
                namespace TEXT NOT NULL,
                hold_id TEXT NOT NULL,
                amount BIGINT NOT NULL,
                model_id TEXT,
                expires_us BIGINT,
                PRIMARY KEY (namespace, hold_id)
            )""",
            """CREATE TABLE falwrap_owners (
                namespace TEXT NOT NULL,
                owner TEXT NOT NULL,
                expires_us BIGINT NOT NULL,
                PRIMARY KEY (namespace, owner)
            )""",
            """CREATE TABLE falwrap_records (
                seq {serial},
                namespace TEXT NOT NULL,
                job_id TEXT,
                model_id TEXT NOT NULL,
                operation TEXT NOT NULL,
                timestamp_us BIGINT NOT NULL,
                day TEXT NOT NULL,
                duration_ms DOUBLE PRECISION NOT NULL,
                cost BIGINT NOT NULL,
                success BOOLEAN NOT NULL,
                error_code TEXT,
                request_id TEXT,
                metadata TEXT NOT NULL
            )""",
            "CREATE INDEX falwrap_records_recent ON falwrap_records (namespace, seq)",
            "CREATE INDEX falwrap_records_model ON falwrap_records (namespace, model_id, seq)",
        ),
    ),
    Migration(
        2,
        "running totals per day and model, so that spend and stats cost the same at any volume",
        (
            """CREATE TABLE falwrap_totals (
                namespace TEXT NOT NULL,
                day TEXT NOT NULL,
                model_id TEXT NOT NULL,
                calls BIGINT NOT NULL DEFAULT 0,
                successes BIGINT NOT NULL DEFAULT 0,
                cost BIGINT NOT NULL DEFAULT 0,
                duration_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
                PRIMARY KEY (namespace, day, model_id)
            )""",
            # Filled from what version 1 holds: the charged cost of jobs on their day and
            # endpoint; calls, successes and durations of records; the cost of job-less records.
            f"""INSERT INTO falwrap_totals (namespace, day, model_id, calls, successes, cost, duration_sum)
                SELECT namespace, day, model_id, SUM(calls), SUM(successes), SUM(cost), SUM(duration_sum)
                FROM (
                    SELECT namespace, day, endpoint AS model_id, 0 AS calls, 0 AS successes, cost,
                           0.0 AS duration_sum
                    FROM falwrap_jobs WHERE state IN {_CHARGED}
                    UNION ALL
                    SELECT namespace, day, model_id, 1, CASE WHEN success THEN 1 ELSE 0 END,
                           CASE WHEN job_id IS NULL THEN cost ELSE 0 END, duration_ms
                    FROM falwrap_records
                ) AS parts
                GROUP BY namespace, day, model_id""",
        ),
    ),
    Migration(
        3,
        "the shared limits: a GCRA schedule and concurrency leases per namespace",
        (
            """CREATE TABLE falwrap_rate (
                namespace TEXT PRIMARY KEY,
                tat_us BIGINT NOT NULL
            )""",
            """CREATE TABLE falwrap_leases (
                namespace TEXT NOT NULL,
                lease_id TEXT NOT NULL,
                expires_us BIGINT NOT NULL,
                PRIMARY KEY (namespace, lease_id)
            )""",
            "CREATE INDEX falwrap_leases_expiry ON falwrap_leases (namespace, expires_us)",
        ),
    ),
    Migration(
        4,
        "one job per fal request id: a request found in fal's list is adopted by one job only",
        (
            "DROP INDEX falwrap_jobs_request",
            """CREATE UNIQUE INDEX falwrap_jobs_request ON falwrap_jobs (namespace, request_id)
                WHERE request_id IS NOT NULL""",
        ),
    ),
)

#: The schema version this falwrap writes and reads.
LATEST_VERSION = MIGRATIONS[-1].version

#: The name of the lock migrations run under (PostgreSQL; SQLite's write lock covers it).
MIGRATION_LOCK = "falwrap:schema"

_SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS falwrap_schema (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_us BIGINT NOT NULL
)"""


def _migrations_to(target: int | None) -> Iterator[Migration]:
    for migration in MIGRATIONS:
        if target is None or migration.version <= target:
            yield migration


def apply_migrations(db: Database, *, target: int | None = None, where: str = "the store") -> int:
    """Bring ``db``'s schema to ``target`` (the latest by default); safe to run from many processes at once.

    Args:
        db: The database.
        target: Stop after this version (tests build older schemas with it).
        where: How to name the database in messages (no credentials).

    Returns:
        The schema version now in place.

    Raises:
        ConfigurationError: the database holds a newer schema than this falwrap knows.
        BackendUnavailableError: the database could not be reached.
    """
    d = db.dialect
    with db.write(MIGRATION_LOCK) as conn:
        conn.execute(_SCHEMA_TABLE)
        current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM falwrap_schema").fetchone()[0])
        if current > LATEST_VERSION:
            msg = (
                f"The falwrap schema in {where} is at version {current}, newer than this falwrap "
                f"understands (version {LATEST_VERSION}). Upgrade falwrap on this host."
            )
            raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
        for migration in _migrations_to(target):
            if migration.version <= current:
                continue
            for statement in migration.statements:
                conn.execute(d.sql(statement))
            conn.execute(
                d.sql("INSERT INTO falwrap_schema (version, description, applied_us) VALUES (?, ?, ?)"),
                (migration.version, migration.description, time.time_ns() // 1000),
            )
            current = migration.version
    return current


def schema_version(db: Database) -> int:
    """The schema version ``db`` holds (0 for a database falwrap never opened)."""
    with db.write(MIGRATION_LOCK) as conn:
        conn.execute(_SCHEMA_TABLE)
        return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM falwrap_schema").fetchone()[0])
