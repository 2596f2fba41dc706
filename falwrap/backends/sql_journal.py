"""The journal in SQL, one implementation for SQLite and PostgreSQL (see :mod:`falwrap.backends.sql`).

Every method is one transaction. A job's changes lock its row (``FOR UPDATE``
in PostgreSQL; SQLite's write transactions are serial) and apply the rules of
:func:`~falwrap.backends.memory.apply_acceptance` and
:func:`~falwrap.backends.memory.apply_settlement`, so every store settles a
job the same way and exactly once. Money moves into ``falwrap_totals`` (per
namespace, day and model) in the same transaction, so daily spend and stats
read a few rows whatever the number of jobs.

Budget checks and idempotency claims are serialised per namespace: SQLite by its
write lock, PostgreSQL by a transaction-scoped advisory lock (see
:mod:`falwrap.backends.postgresql` for why), and the amounts a check compares
are read in one statement, so they come from one snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import attrs

from falwrap.aggregates import summarize
from falwrap.backends.memory import apply_acceptance, apply_settlement, budget_error, detached
from falwrap.backends.sql import Connection, Database, day_text, from_us, to_us
from falwrap.journal import (
    CHARGED_STATES,
    OPEN_STATES,
    Accepted,
    IdempotencyConflict,
    JobEntry,
    JobIntent,
    JobState,
    RequestTaken,
    Settlement,
)
from falwrap.money import from_micros, to_micros
from falwrap.records import CallRecord

__all__ = ["DURATION_WINDOW", "SqlJournal"]

#: How many recent durations per scope p50/p95 are computed from (as the in-memory journal).
DURATION_WINDOW = 1000

_JOB_COLUMNS = (
    "job_id, endpoint, operation, arguments, fingerprint, estimate, owner, created_us, state, cost, cost_final, "
    "billable_units, idempotency_key, key_expires_us, webhook_url, request_id, status_url, response_url, "
    "cancel_url, gateway_request_id, accepted_us, finished_us, result, error_code, error_message, recorded"
)
_SELECT_JOB = f"SELECT {_JOB_COLUMNS} FROM falwrap_jobs WHERE namespace = ? AND job_id = ?"
_LOCK_JOB = _SELECT_JOB + "{for_update}"

_OWNER_OF_REQUEST = f"""SELECT {_JOB_COLUMNS} FROM falwrap_jobs
    WHERE namespace = ? AND request_id = ? AND job_id <> ? LIMIT 1"""

_INSERT_JOB = """INSERT INTO falwrap_jobs (namespace, job_id, endpoint, operation, arguments, fingerprint,
    estimate, owner, created_us, day, state, cost, idempotency_key, key_expires_us, webhook_url)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

_UPDATE_JOB = """UPDATE falwrap_jobs SET state = ?, cost = ?, cost_final = ?, billable_units = ?, owner = ?,
    request_id = ?, status_url = ?, response_url = ?, cancel_url = ?, gateway_request_id = ?, accepted_us = ?,
    finished_us = ?, result = ?, error_code = ?, error_message = ?, recorded = ?
    WHERE namespace = ? AND job_id = ?"""

_KEYED = f"""SELECT {_JOB_COLUMNS} FROM falwrap_jobs
    WHERE namespace = ? AND idempotency_key = ? ORDER BY seq DESC LIMIT 1"""

# One statement, so spend and holds come from one snapshot: a job moving from held to
# spent between two reads would otherwise be counted twice or not at all.
_BUDGET_USE = """SELECT
    (SELECT COALESCE(SUM(cost), 0) FROM falwrap_totals WHERE namespace = ? AND day = ?),
    (SELECT COALESCE(SUM(amount), 0) FROM falwrap_holds
        WHERE namespace = ? AND (expires_us IS NULL OR expires_us > ?)),
    (SELECT COALESCE(SUM(estimate), 0) FROM falwrap_jobs WHERE namespace = ? AND state = 'submitting')"""

_SWEEP_HOLDS = "DELETE FROM falwrap_holds WHERE namespace = ? AND expires_us IS NOT NULL AND expires_us <= ?"

_ADD_TOTALS = """INSERT INTO falwrap_totals (namespace, day, model_id, calls, successes, cost, duration_sum)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (namespace, day, model_id) DO UPDATE SET
        calls = falwrap_totals.calls + excluded.calls,
        successes = falwrap_totals.successes + excluded.successes,
        cost = falwrap_totals.cost + excluded.cost,
        duration_sum = falwrap_totals.duration_sum + excluded.duration_sum"""

_INSERT_RECORD = """INSERT INTO falwrap_records (namespace, job_id, model_id, operation, timestamp_us, day,
    duration_ms, cost, success, error_code, request_id, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

_RECORD_COLUMNS = (
    "job_id, model_id, operation, timestamp_us, duration_ms, cost, success, error_code, request_id, metadata"
)

_OPEN = "('submitting', 'running', 'unknown')"
_TERMINAL_CHARGED = "('succeeded', 'failed', 'cancelled')"

# Open jobs whose owner has no live heartbeat; with provisional, terminal charged jobs
# whose cost is not final. Every open job has cost_final false, so the partial index
# on cost_final = FALSE serves both.
_UNSETTLED = f"""SELECT {_JOB_COLUMNS} FROM falwrap_jobs AS j
    WHERE j.namespace = ? AND j.cost_final = FALSE AND (
        (j.state IN {_OPEN} AND (j.owner IS NULL OR NOT EXISTS (
            SELECT 1 FROM falwrap_owners AS o
            WHERE o.namespace = j.namespace AND o.owner = j.owner AND o.expires_us > ?)))
        OR (? AND j.state IN {_TERMINAL_CHARGED}))
    ORDER BY j.created_us, j.seq"""

_TOTALS = """SELECT model_id, SUM(calls), SUM(successes), SUM(cost), SUM(duration_sum)
    FROM falwrap_totals WHERE namespace = ? {model} GROUP BY model_id"""

_RECENT_DURATIONS = """SELECT duration_ms FROM falwrap_records WHERE namespace = ? {model}
    ORDER BY seq DESC LIMIT ?"""

_RECENT_BY_MODEL = """SELECT model_id, duration_ms FROM (
        SELECT model_id, duration_ms, ROW_NUMBER() OVER (PARTITION BY model_id ORDER BY seq DESC) AS n
        FROM falwrap_records WHERE namespace = ?) AS recent
    WHERE n <= ?"""


def _plain(value: object) -> dict[str, Any]:
    # Read-only views (a CallRecord's metadata) and other mappings are written as objects.
    if isinstance(value, Mapping):
        return dict(value)
    msg = f"Object of type {type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


def _json(value: Mapping[str, Any] | None) -> str | None:
    # ensure_ascii=False keeps text as written; both databases store UTF-8 text unchanged.
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)


def _opt_us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def _opt_time(micros: int | None) -> datetime | None:
    return None if micros is None else from_us(micros)


def _entry(row: Sequence[Any]) -> JobEntry:
    return JobEntry(
        job_id=row[0],
        endpoint=row[1],
        operation=row[2],
        arguments=json.loads(row[3]),
        fingerprint=row[4],
        estimate=from_micros(row[5]),
        owner=row[6],
        created_at=from_us(row[7]),
        state=JobState(row[8]),
        cost=from_micros(row[9]),
        cost_final=bool(row[10]),
        billable_units=None if row[11] is None else Decimal(row[11]),
        idempotency_key=row[12],
        key_expires_at=_opt_time(row[13]),
        webhook_url=row[14],
        request_id=row[15],
        status_url=row[16],
        response_url=row[17],
        cancel_url=row[18],
        gateway_request_id=row[19],
        accepted_at=_opt_time(row[20]),
        finished_at=_opt_time(row[21]),
        result=None if row[22] is None else json.loads(row[22]),
        error_code=row[23],
        error_message=row[24],
        recorded=bool(row[25]),
    )


def _record(row: Sequence[Any]) -> CallRecord:
    return CallRecord(
        timestamp=from_us(row[3]),
        model_id=row[1],
        operation=row[2],
        duration_ms=float(row[4]),
        cost_usd=from_micros(row[5]),
        success=bool(row[6]),
        error_code=row[7],
        request_id=row[8],
        metadata=json.loads(row[9]),
        job_id=row[0],
    )


def _charged(entry: JobEntry) -> int:
    return to_micros(entry.cost) if entry.state in CHARGED_STATES else 0


class SqlJournal:
    """A :class:`~falwrap.journal.Journal` in a SQL database; thread-safe and safe across processes.

    Built by :class:`~falwrap.backends.sqlite.SqliteStore` and
    :class:`~falwrap.backends.postgresql.PostgresStore`; closing it closes its store.

    Args:
        db: The database (its schema already migrated).
        namespace: The namespace every row is written under.
        on_close: Called by :meth:`close` (the store's own close).
    """

    def __init__(self, db: Database, namespace: str, on_close: Callable[[], None] | None = None) -> None:
        self._db = db
        self._d = db.dialect
        self._ns = namespace
        self._on_close = on_close
        self._jobs_lock = f"falwrap:jobs:{namespace}"

    def __repr__(self) -> str:
        return f"SqlJournal({self._d.name}, namespace={self._ns!r})"

    # -- jobs ---------------------------------------------------------------------------------

    def open_job(self, intent: JobIntent, *, budget: Decimal | None, now: datetime) -> tuple[JobEntry, bool]:
        """See :meth:`falwrap.journal.Journal.open_job`."""
        d = self._d
        key = intent.idempotency_key
        locks = (self._jobs_lock,) if budget is not None or key is not None else ()
        arguments = _json(intent.arguments)
        with self._db.write(*locks) as conn:
            if key is not None:
                row = conn.execute(d.sql(_KEYED), (self._ns, key)).fetchone()
                existing = None if row is None else _entry(row)
                if (
                    existing is not None
                    and existing.state is not JobState.NOT_SENT
                    and (existing.key_expires_at is None or existing.key_expires_at > now)
                ):
                    if existing.fingerprint != intent.fingerprint:
                        raise IdempotencyConflict(existing)
                    return existing, False
            estimate = to_micros(intent.estimate)
            if budget is not None:
                self._check_budget(conn, estimate, budget, now, intent.endpoint)
            if conn.execute(d.sql(_SELECT_JOB), (self._ns, intent.job_id)).fetchone() is not None:
                msg = f"job {intent.job_id} is already journaled"
                raise ValueError(msg)
            conn.execute(
                d.sql(_INSERT_JOB),
                (
                    self._ns,
                    intent.job_id,
                    intent.endpoint,
                    intent.operation,
                    arguments,
                    intent.fingerprint,
                    estimate,
                    intent.owner,
                    to_us(intent.created_at),
                    day_text(intent.day),
                    JobState.SUBMITTING.value,
                    estimate,
                    key,
                    _opt_us(intent.key_expires_at),
                    intent.webhook_url,
                ),
            )
        entry = JobEntry.opened(intent)
        return entry, True

    def _check_budget(
        self, conn: Connection, micros: int, budget: Decimal, now: datetime, model_id: str | None
    ) -> None:
        ns, now_us = self._ns, to_us(now)
        conn.execute(self._d.sql(_SWEEP_HOLDS), (ns, now_us))
        spent, held, submitting = conn.execute(
            self._d.sql(_BUDGET_USE), (ns, day_text(now.date()), ns, now_us, ns)
        ).fetchone()
        reserved = int(held) + int(submitting)
        if int(spent) + reserved + micros > to_micros(budget):
            raise budget_error(spent=int(spent), reserved=reserved, estimate=micros, budget=budget, model_id=model_id)

    def _locked(self, conn: Connection, job_id: str) -> JobEntry:
        row = conn.execute(self._d.sql(_LOCK_JOB), (self._ns, job_id)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _entry(row)

    def _put(self, conn: Connection, old: JobEntry, new: JobEntry, extra: dict[tuple[date, str], list[Any]]) -> None:
        """Write ``new`` over ``old`` and move the totals by the difference, plus ``extra`` call counts."""
        conn.execute(
            self._d.sql(_UPDATE_JOB),
            (
                new.state.value,
                to_micros(new.cost),
                new.cost_final,
                None if new.billable_units is None else str(new.billable_units),
                new.owner,
                new.request_id,
                new.status_url,
                new.response_url,
                new.cancel_url,
                new.gateway_request_id,
                _opt_us(new.accepted_at),
                _opt_us(new.finished_at),
                _json(new.result),
                new.error_code,
                new.error_message,
                new.recorded,
                self._ns,
                new.job_id,
            ),
        )
        delta = _charged(new) - _charged(old)
        if delta:
            extra.setdefault((new.day, new.endpoint), [0, 0, 0, 0.0])[2] += delta
        # Sorted, so that transactions touching two totals rows lock them in one order (no deadlock).
        for (day, model), (calls, successes, cost, duration) in sorted(extra.items()):
            conn.execute(self._d.sql(_ADD_TOTALS), (self._ns, day_text(day), model, calls, successes, cost, duration))

    def accept(self, job_id: str, accepted: Accepted, *, now: datetime) -> JobEntry:
        """See :meth:`falwrap.journal.Journal.accept`."""
        with self._db.write() as conn:
            entry = self._locked(conn, job_id)
            # One owner per request id: the named lock serialises the check and the write across
            # hosts (PostgreSQL), the unique index catches anything else.
            self._d.lock(conn, f"{self._ns}:requests")
            taken = conn.execute(self._d.sql(_OWNER_OF_REQUEST), (self._ns, accepted.request_id, job_id)).fetchone()
            if taken is not None:
                raise RequestTaken(_entry(taken))
            new = apply_acceptance(entry, accepted, now)
            if new is None:
                return entry
            self._put(conn, entry, new, {})
            return new

    def mark_unknown(self, job_id: str, *, now: datetime) -> JobEntry:
        """See :meth:`falwrap.journal.Journal.mark_unknown`."""
        with self._db.write() as conn:
            entry = self._locked(conn, job_id)
            if entry.state is not JobState.SUBMITTING:
                return entry
            new = attrs.evolve(entry, state=JobState.UNKNOWN)
            self._put(conn, entry, new, {})
            return new

    def finish(
        self,
        job_id: str,
        *,
        settlement: Settlement | None = None,
        record: CallRecord | None = None,
        now: datetime,
    ) -> bool:
        """See :meth:`falwrap.journal.Journal.finish`."""
        with self._db.write() as conn:
            entry = self._locked(conn, job_id)
            new, settled = apply_settlement(entry, settlement, now)
            calls: dict[tuple[date, str], list[Any]] = {}
            if record is not None and not entry.recorded:
                self._insert_record(conn, record, job_id)
                calls[(record.day, record.model_id)] = [1, int(record.success), 0, record.duration_ms]
                new = attrs.evolve(new, recorded=True)
            new = detached(new, now)
            if new != entry:
                self._put(conn, entry, new, calls)
            return settled

    def _insert_record(self, conn: Connection, rec: CallRecord, job_id: str | None) -> None:
        conn.execute(
            self._d.sql(_INSERT_RECORD),
            (
                self._ns,
                job_id,
                rec.model_id,
                rec.operation,
                to_us(rec.timestamp),
                day_text(rec.day),
                rec.duration_ms,
                to_micros(rec.cost_usd),
                rec.success,
                rec.error_code,
                rec.request_id,
                _json(rec.metadata),
            ),
        )

    def get(self, job_id: str) -> JobEntry | None:
        """See :meth:`falwrap.journal.Journal.get`."""
        with self._db.read() as conn:
            row = conn.execute(self._d.sql(_SELECT_JOB), (self._ns, job_id)).fetchone()
        return None if row is None else _entry(row)

    def find(self, request_id: str) -> JobEntry | None:
        """See :meth:`falwrap.journal.Journal.find`."""
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM falwrap_jobs WHERE namespace = ? AND request_id = ? ORDER BY seq DESC LIMIT 1"
        )
        with self._db.read() as conn:
            row = conn.execute(self._d.sql(sql), (self._ns, request_id)).fetchone()
        return None if row is None else _entry(row)

    def unsettled(self, *, now: datetime, provisional: bool = True) -> list[JobEntry]:
        """See :meth:`falwrap.journal.Journal.unsettled`."""
        with self._db.read() as conn:
            rows = conn.execute(self._d.sql(_UNSETTLED), (self._ns, to_us(now), provisional)).fetchall()
        return [_entry(row) for row in rows]

    def jobs(self, *, since: datetime | None = None, limit: int | None = None) -> list[JobEntry]:
        """See :meth:`falwrap.journal.Journal.jobs`."""
        # Ties in time keep the order they were opened in, as the in-memory journal's stable sort does.
        sql = f"SELECT {_JOB_COLUMNS} FROM falwrap_jobs WHERE namespace = ?"
        params: list[Any] = [self._ns]
        if since is not None:
            sql += " AND created_us >= ?"
            params.append(to_us(since))
        sql += " ORDER BY created_us DESC, seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        with self._db.read() as conn:
            rows = conn.execute(self._d.sql(sql), params).fetchall()
        return [_entry(row) for row in rows]

    def claim(self, job_id: str, owner: str, *, now: datetime) -> bool:
        """See :meth:`falwrap.journal.Journal.claim`."""
        alive = "SELECT 1 FROM falwrap_owners WHERE namespace = ? AND owner = ? AND expires_us > ?"
        with self._db.write() as conn:
            # The row lock makes it a compare-and-set: a second taker waits, then reads the winner.
            entry = self._locked(conn, job_id)
            if entry.state not in OPEN_STATES:
                return False
            if (
                entry.owner is not None
                and conn.execute(self._d.sql(alive), (self._ns, entry.owner, to_us(now))).fetchone()
            ):
                return False
            self._put(conn, entry, attrs.evolve(entry, owner=owner), {})
            return True

    def heartbeat(self, owner: str, *, ttl: float, now: datetime) -> None:
        """See :meth:`falwrap.journal.Journal.heartbeat`."""
        expires = to_us(now) + round(ttl * 1_000_000)
        sql = """INSERT INTO falwrap_owners (namespace, owner, expires_us) VALUES (?, ?, ?)
            ON CONFLICT (namespace, owner) DO UPDATE SET expires_us = excluded.expires_us"""
        with self._db.write() as conn:
            conn.execute(self._d.sql(sql), (self._ns, owner, expires))

    def drop_owner(self, owner: str) -> None:
        """See :meth:`falwrap.journal.Journal.drop_owner`."""
        with self._db.write() as conn:
            conn.execute(self._d.sql("DELETE FROM falwrap_owners WHERE namespace = ? AND owner = ?"), (self._ns, owner))

    # -- holds ----------------------------------------------------------------------------------

    def hold(
        self,
        hold_id: str,
        amount: Decimal,
        *,
        budget: Decimal | None,
        model_id: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        """See :meth:`falwrap.journal.Journal.hold`."""
        micros = to_micros(amount)
        sql = """INSERT INTO falwrap_holds (namespace, hold_id, amount, model_id, expires_us) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (namespace, hold_id) DO UPDATE SET amount = excluded.amount,
                model_id = excluded.model_id, expires_us = excluded.expires_us"""
        with self._db.write(*((self._jobs_lock,) if budget is not None else ())) as conn:
            if budget is not None:
                self._check_budget(conn, micros, budget, now, model_id)
            conn.execute(self._d.sql(sql), (self._ns, hold_id, micros, model_id, _opt_us(expires_at)))

    def release(self, hold_id: str) -> None:
        """See :meth:`falwrap.journal.Journal.release`."""
        with self._db.write() as conn:
            conn.execute(
                self._d.sql("DELETE FROM falwrap_holds WHERE namespace = ? AND hold_id = ?"), (self._ns, hold_id)
            )

    def reserved(self, *, now: datetime) -> Decimal:
        """See :meth:`falwrap.journal.Journal.reserved`."""
        ns = self._ns
        with self._db.read() as conn:
            _, held, submitting = conn.execute(
                self._d.sql(_BUDGET_USE), (ns, day_text(now.date()), ns, to_us(now), ns)
            ).fetchone()
        return from_micros(int(held) + int(submitting))

    # -- records --------------------------------------------------------------------------------

    def add_record(self, rec: CallRecord, *, hold_id: str | None = None) -> None:
        """See :meth:`falwrap.journal.Journal.add_record`."""
        cost = to_micros(rec.cost_usd) if rec.job_id is None else 0
        with self._db.write() as conn:
            self._insert_record(conn, rec, rec.job_id)
            conn.execute(
                self._d.sql(_ADD_TOTALS),
                (self._ns, day_text(rec.day), rec.model_id, 1, int(rec.success), cost, rec.duration_ms),
            )
            if hold_id is not None:
                conn.execute(
                    self._d.sql("DELETE FROM falwrap_holds WHERE namespace = ? AND hold_id = ?"), (self._ns, hold_id)
                )

    def daily_cost(self, day: date) -> Decimal:
        """See :meth:`falwrap.journal.Journal.daily_cost`."""
        sql = "SELECT COALESCE(SUM(cost), 0) FROM falwrap_totals WHERE namespace = ? AND day = ?"
        with self._db.read() as conn:
            (cost,) = conn.execute(self._d.sql(sql), (self._ns, day_text(day))).fetchone()
        return from_micros(int(cost))

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """See :meth:`falwrap.journal.Journal.stats`."""
        d, ns = self._d, self._ns
        only = "" if model is None else "AND model_id = ?"
        scope: list[Any] = [ns] if model is None else [ns, model]
        with self._db.read() as conn:
            totals = conn.execute(d.sql(_TOTALS.format(model=only)), scope).fetchall()
            recent = sorted(
                float(r[0])
                for r in conn.execute(d.sql(_RECENT_DURATIONS.format(model=only)), [*scope, DURATION_WINDOW]).fetchall()
            )
            by_model_durations: dict[str, list[float]] = {}
            if model is None:
                for name, duration in conn.execute(d.sql(_RECENT_BY_MODEL), (ns, DURATION_WINDOW)).fetchall():
                    by_model_durations.setdefault(name, []).append(float(duration))
            else:
                by_model_durations[model] = recent
        per_model = {
            name: summarize(int(calls), int(ok), int(cost), float(dsum), sorted(by_model_durations.get(name, ())))
            for name, calls, ok, cost, dsum in totals
        }
        calls = sum(int(t[1]) for t in totals)
        top = summarize(
            calls,
            sum(int(t[2]) for t in totals),
            sum(int(t[3]) for t in totals),
            sum(float(t[4]) for t in totals),
            recent,
        )
        return {**top, "by_model": per_model}

    def records(self, limit: int | None = None) -> list[CallRecord]:
        """See :meth:`falwrap.journal.Journal.records`."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM falwrap_records WHERE namespace = ? ORDER BY seq DESC"
        params: list[Any] = [self._ns]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        with self._db.read() as conn:
            rows = conn.execute(self._d.sql(sql), params).fetchall()
        return [_record(row) for row in rows]

    def close(self) -> None:
        """Close the store this journal belongs to; idempotent."""
        if self._on_close is not None:
            self._on_close()
