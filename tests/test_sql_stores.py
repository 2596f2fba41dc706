"""Tests specific to the SQL stores: migrations, many processes on one budget, SQLite settings, failures.

What every store does the same is in ``tests/contract/``; these cases need a SQL
database: a SQLite file under tmp_path, and the test PostgreSQL on 127.0.0.1
(a schema of its own where a test needs an empty database).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from falwrap import FalClient, FalConfig, RateLimitConfig
from falwrap.backends import migrate, open_store, wipe_namespace
from falwrap.backends.sql import LATEST_VERSION, Database, apply_migrations, schema_version
from falwrap.backends.sqlite import SqliteStore, open_database
from falwrap.errors import BackendUnavailableError, BudgetExceededError, ConfigurationError
from falwrap.journal import JobIntent
from falwrap.testing import FakeFal
from tests.contract.stores import POSTGRES_URL, fresh_store
from tests.helpers.proxy import Proxy

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)
FLUX = "fal-ai/flux/dev"


def intent(estimate: str = "0.01", *, at: datetime = T0) -> JobIntent:
    return JobIntent(
        job_id=uuid.uuid4().hex,
        endpoint=FLUX,
        operation="generate",
        arguments={"prompt": "a cat"},
        estimate=Decimal(estimate),
        owner="host:1:a",
        created_at=at,
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite URL in a directory that does not exist yet."""
    return f"sqlite:///{tmp_path / 'state' / 'falwrap.db'}"


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A URL on the test PostgreSQL whose tables go in a fresh schema of their own, dropped afterwards."""
    with fresh_store("postgresql", tmp_path):  # skips (fails under CI=true) without PostgreSQL
        pass
    import psycopg

    schema = f"falwrap_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options={quote(f'-c search_path={schema}')}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _database(url: str) -> Database:
    if url.startswith("sqlite:"):
        return open_database(url)
    from falwrap.backends.postgresql import open_database as open_postgres

    return open_postgres(url)


def _rows(db: Database, sql: str) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sql).fetchall())


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest) -> str:
    """Each SQL backend on an empty database."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


# -- migrations ------------------------------------------------------------------------------------


def test_a_fresh_database_gets_the_latest_schema_once(sql_url: str) -> None:
    """Opening an empty database creates every version once; opening it again applies nothing."""
    open_store(sql_url, namespace="ns").close()
    open_store(sql_url, namespace="ns").close()
    db = _database(sql_url)
    try:
        versions = [row[0] for row in _rows(db, "SELECT version FROM falwrap_schema ORDER BY version")]
        assert versions == list(range(1, LATEST_VERSION + 1))
        assert schema_version(db) == LATEST_VERSION
    finally:
        db.close()
    assert migrate(sql_url) == LATEST_VERSION


def _open_at(url: str, start_at: float, results: Any) -> None:
    time.sleep(max(0.0, start_at - time.monotonic()))
    try:
        store = open_store(url, namespace="ns")
        store.journal.open_job(intent(), budget=None, now=T0)
        store.close()
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_fresh_database_at_once_all_succeed(sql_url: str) -> None:
    """4 processes opening an empty database at the same instant all open it; each version is applied once."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.monotonic() + 1.0
    procs = [ctx.Process(target=_open_at, args=(sql_url, start_at, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert outcomes == ["ok"] * 4
    db = _database(sql_url)
    try:
        assert _rows(db, "SELECT COUNT(*) FROM falwrap_schema")[0][0] == LATEST_VERSION
        assert _rows(db, "SELECT COUNT(*) FROM falwrap_jobs")[0][0] == 4
    finally:
        db.close()


def test_an_older_schema_is_upgraded_with_its_data(sql_url: str) -> None:
    """A version-1 database with jobs and records opens at the latest version, its spend and stats carried over."""
    db = _database(sql_url)
    try:
        assert apply_migrations(db, target=1) == 1
        d = db.dialect
        with db.write() as conn:
            job = """INSERT INTO falwrap_jobs (namespace, job_id, endpoint, operation, arguments, fingerprint,
                estimate, created_us, day, state, cost, cost_final, recorded) VALUES (?, ?, ?, 'generate', '{}', 'f',
                25000, 1773489600000000, '2026-03-14', ?, ?, ?, TRUE)"""
            conn.execute(d.sql(job), ("ns", "j1", FLUX, "succeeded", 30000, True))
            conn.execute(d.sql(job), ("ns", "j2", FLUX, "not_sent", 0, True))
            conn.execute(d.sql(job), ("ns", "j3", FLUX, "submitting", 25000, False))
            record = """INSERT INTO falwrap_records (namespace, job_id, model_id, operation, timestamp_us, day,
                duration_ms, cost, success, metadata) VALUES (?, ?, ?, 'generate', 1773489600000000, '2026-03-14',
                ?, ?, ?, '{}')"""
            conn.execute(d.sql(record), ("ns", "j1", FLUX, 100.0, 30000, True))
            conn.execute(d.sql(record), ("ns", None, FLUX, 300.0, 5000, False))
    finally:
        db.close()
    store = open_store(sql_url, namespace="ns")
    try:
        journal = store.journal
        assert journal.daily_cost(T0.date()) == Decimal("0.035")
        assert journal.reserved(now=T0) == Decimal("0.025")
        stats = journal.stats()
        assert (stats["total_calls"], stats["successes"]) == (2, 1)
        assert stats["total_cost_usd"] == Decimal("0.035")
        assert stats["avg_duration_ms"] == pytest.approx(200.0)
        got = journal.get("j1")
        assert got is not None
        assert got.cost == Decimal("0.03")
    finally:
        store.close()
    assert migrate(sql_url) == LATEST_VERSION


def test_a_newer_schema_is_refused(sql_url: str) -> None:
    """A database written by a newer falwrap is refused at open, naming both versions."""
    open_store(sql_url, namespace="ns").close()
    db = _database(sql_url)
    try:
        with db.write() as conn:
            conn.execute(
                db.dialect.sql("INSERT INTO falwrap_schema (version, description, applied_us) VALUES (?, 'x', 0)"),
                (LATEST_VERSION + 1,),
            )
    finally:
        db.close()
    with pytest.raises(ConfigurationError, match=f"version {LATEST_VERSION + 1}"):
        open_store(sql_url, namespace="ns")


def test_migrate_refuses_a_store_without_a_schema() -> None:
    """migrate() on a memory: or redis: URL says those stores have no schema."""
    with pytest.raises(ConfigurationError, match="no schema"):
        migrate("memory:")


# -- many processes on one budget ----------------------------------------------------------------


def _spend(url: str, namespace: str, threads: int, attempts: int, start_at: float, results: Any) -> None:
    store = open_store(url, namespace=namespace)
    granted = 0
    lock = threading.Lock()

    def work(t: int) -> None:
        nonlocal granted
        journal = store.journal
        for i in range(attempts):
            try:
                if (t + i) % 3 == 0:  # a third are the ledger's job-less holds
                    journal.hold(uuid.uuid4().hex, Decimal("0.01"), budget=Decimal(1), model_id=FLUX,
                                 expires_at=None, now=T0)  # fmt: skip
                else:
                    journal.open_job(intent("0.01"), budget=Decimal(1), now=T0)
            except BudgetExceededError:
                continue
            with lock:
                granted += 1

    time.sleep(max(0.0, start_at - time.monotonic()))
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    store.close()
    results.put(granted)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_four_processes_grant_exactly_what_fits_the_budget(kind: str, tmp_path: Path) -> None:
    """4 processes x 8 threads x 6 holds of $0.01 against $1.00 on one store: exactly 100 are granted."""
    with fresh_store(kind, tmp_path) as factory:
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        start_at = time.monotonic() + 1.0
        args = (factory.url, factory.namespace, 8, 6, start_at, results)
        procs = [ctx.Process(target=_spend, args=args) for _ in range(4)]
        for p in procs:
            p.start()
        granted = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=10)
            assert p.exitcode == 0
        assert sum(granted) == 100
        assert factory.journal().reserved(now=T0) == Decimal("1.00")


# -- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_normal_sync(sqlite_url: str) -> None:
    """The file is in WAL mode (seen by any connection) and the store's connections sync NORMAL with a busy timeout."""
    store = SqliteStore.from_url(sqlite_url, namespace="ns")
    try:
        with sqlite3.connect(store.path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()
    db = open_database(sqlite_url)
    try:
        with db.read() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        db.close()


def test_sqlite_creates_the_directory(tmp_path: Path) -> None:
    """A missing directory (several levels) is created."""
    path = tmp_path / "a" / "b" / "falwrap.db"
    SqliteStore.from_url(f"sqlite:///{path}", namespace="ns").close()
    assert path.is_file()


@pytest.mark.parametrize(
    "url",
    ["sqlite://relative.db", "sqlite:relative.db", "sqlite:///", "sqlite:///tmp/x.db?mode=ro"],
)
def test_sqlite_url_must_name_an_absolute_file(url: str) -> None:
    """Relative paths, a missing file name and query strings are refused, naming FALWRAP_STORE_URL."""
    with pytest.raises(ConfigurationError) as info:
        SqliteStore.from_url(url, namespace="ns")
    assert info.value.variable == "FALWRAP_STORE_URL"
    assert url in str(info.value)


def test_sqlite_unusable_locations_are_configuration_errors(tmp_path: Path) -> None:
    """A path under a regular file, a directory in place of the file, and a corrupt file each fail at open."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a SQLite database" * 200)
    for path in (blocker / "sub" / "falwrap.db", tmp_path, corrupt):
        with pytest.raises(ConfigurationError) as info:
            SqliteStore.from_url(f"sqlite:///{path}", namespace="ns")
        assert info.value.variable == "FALWRAP_STORE_URL"
        assert str(path) in str(info.value)


def test_a_closed_store_refuses_calls(sqlite_url: str) -> None:
    """After close(), calls raise BackendUnavailableError; closing twice is fine."""
    store = SqliteStore.from_url(sqlite_url, namespace="ns")
    journal = store.journal
    journal.open_job(intent(), budget=None, now=T0)
    store.close()
    store.close()
    with pytest.raises(BackendUnavailableError, match="closed"):
        journal.reserved(now=T0)


def test_namespaces_do_not_mix(sqlite_url: str) -> None:
    """Two namespaces in one file have separate spend, holds and schedules."""
    a = SqliteStore.from_url(sqlite_url, namespace="a")
    b = SqliteStore.from_url(sqlite_url, namespace="b")
    try:
        entry, _ = a.journal.open_job(intent("0.5"), budget=Decimal(1), now=T0)
        b.journal.open_job(intent("1"), budget=Decimal(1), now=T0)
        assert a.journal.reserved(now=T0) == Decimal("0.5")
        assert b.journal.get(entry.job_id) is None
        assert a.rate_limiter(60, 1).acquire(timeout=0) == 0.0
        assert b.rate_limiter(60, 1).acquire(timeout=0) == 0.0
    finally:
        a.close()
        b.close()


# -- PostgreSQL ------------------------------------------------------------------------------------


def test_wipe_deletes_one_namespace_only(postgres_url: str) -> None:
    """wipe_namespace removes every row of one namespace and leaves the others."""
    a = open_store(postgres_url, namespace="a")
    b = open_store(postgres_url, namespace="b")
    try:
        a.journal.open_job(intent("0.5"), budget=None, now=T0)
        b.journal.open_job(intent("0.7"), budget=None, now=T0)
        a.rate_limiter(60, 1).acquire()
        wipe_namespace(postgres_url, "a")
        assert a.journal.reserved(now=T0) == 0
        assert a.rate_limiter(60, 1).acquire(timeout=0) == 0.0
        assert b.journal.reserved(now=T0) == Decimal("0.7")
    finally:
        a.close()
        b.close()


def test_unreachable_postgres_at_open_is_a_configuration_error() -> None:
    """A server that refuses connections fails open_store quickly with ConfigurationError, without the password."""
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        open_store("postgresql://falwrap:s3cret@127.0.0.1:1/test", namespace="ns")
    assert time.monotonic() - start < 3.0
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(info.value.__cause__)


def test_a_bad_postgres_url_is_a_configuration_error() -> None:
    """A URL libpq cannot parse is refused, naming FALWRAP_STORE_URL."""
    with pytest.raises(ConfigurationError) as info:
        open_store("postgresql://127.0.0.1:5432/test?nosuchoption=1", namespace="ns")
    assert info.value.variable == "FALWRAP_STORE_URL"


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[tuple[Proxy, str]]:
    """A relay to the test PostgreSQL, and a store URL through it (same schema)."""
    proxy = Proxy(("127.0.0.1", 5432))
    yield proxy, postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    proxy.close()


def test_postgres_that_stops_answering_fails_within_the_call_timeout(pg_proxy: tuple[Proxy, str]) -> None:
    """A server that keeps connections open but never answers gives BackendUnavailableError within ~2 s per call."""
    proxy, url = pg_proxy
    store = open_store(url, namespace="ns")
    try:
        journal = store.journal
        entry, _ = journal.open_job(intent(), budget=Decimal(1), now=T0)
        slot = store.concurrency_limiter(1).acquire(timeout=0)
        proxy.freeze()
        calls = [
            lambda: journal.get(entry.job_id),
            lambda: journal.open_job(intent(), budget=Decimal(1), now=T0),
            lambda: store.rate_limiter(60, 1).acquire(),
        ]

        def timed_failure(call: Callable[[], object]) -> float:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                call()
            return time.monotonic() - start

        def renew_and_release() -> float:
            start = time.monotonic()
            # Renewal and release do not raise: the job goes on and the lease lapses by itself.
            assert slot.renew() is False
            slot.release()
            return time.monotonic() - start

        # The calls run at once, each on its own pooled connection: each must fail in time on its own.
        with ThreadPoolExecutor(len(calls) + 1) as pool:
            failures = [pool.submit(timed_failure, call) for call in calls]
            cleanup = pool.submit(renew_and_release)
            assert all(f.result() < 3.0 for f in failures), [f.result() for f in failures]
            assert cleanup.result() < 6.0
    finally:
        store.close()


def test_postgres_that_went_away_fails_at_once(pg_proxy: tuple[Proxy, str]) -> None:
    """Once the server's connections are closed, calls raise BackendUnavailableError quickly."""
    proxy, url = pg_proxy
    store = open_store(url, namespace="ns")
    try:
        store.journal.open_job(intent(), budget=None, now=T0)
        proxy.close()
        start = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            store.journal.reserved(now=T0 + timedelta(seconds=1))
        assert time.monotonic() - start < 3.0
    finally:
        store.close()


def test_closing_a_sqlite_store_under_running_statements_ends_each_thread_cleanly(tmp_path: Path) -> None:
    """close() while eight threads read and write: each ends with BackendUnavailableError, none crashes.

    Closing a connection under a statement another thread is running crashed the interpreter
    (SIGSEGV in 3 of 8 runs before the fix); a connection in use is now closed by its thread.
    """
    import json
    import subprocess
    import sys

    for run in range(4):
        child = subprocess.run(
            [sys.executable, "-m", "tests.helpers.sqlite_close", str(tmp_path / f"close-{run}.db")],
            check=False, capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
        report = json.loads(child.stdout.strip().splitlines()[-1])
        assert report == {"ends": ["closed"], "threads": 8, "fewest_rounds": report["fewest_rounds"]}
        assert report["fewest_rounds"] > 0


# -- owners -------------------------------------------------------------------------------------------


def test_concurrent_first_calls_journal_no_job_before_their_process_heartbeat(postgres_url: str) -> None:
    """A process's first calls, in four threads: none journals its job before the process's heartbeat is in the
    journal. A job under an owner the journal does not know alive looks like a dead process's orphan to any other
    process starting then, which reconciles it (seen as a stray status request under load in the webhook e2e)."""
    import psycopg

    with FakeFal(latency=0.05) as fal:
        rate = RateLimitConfig(requests_per_minute=600_000, burst=100)
        config = FalConfig(api_key=fal.key, base_url=fal.url, store_url=postgres_url, rate_limit=rate)
        with (
            FalClient(config) as client,
            psycopg.connect(postgres_url) as blocker,
            psycopg.connect(postgres_url, autocommit=True) as reader,
        ):
            # The heartbeat's write waits behind this lock; reading the tables does not.
            blocker.execute("LOCK TABLE falwrap_owners IN EXCLUSIVE MODE")
            with ThreadPoolExecutor(4) as pool:
                calls = [pool.submit(client.image, "a cat", model="fal-ai/flux/schnell") for _ in range(4)]
                time.sleep(1.0)  # far longer than journaling and submitting four jobs takes
                (journaled,) = reader.execute("SELECT count(*) FROM falwrap_jobs").fetchone() or (None,)
                submitted = fal.submissions
                blocker.rollback()  # the heartbeat goes in; the calls go on
                results = [call.result(timeout=60) for call in calls]
    assert (journaled, submitted) == (0, 0)
    assert len({result.request_id for result in results}) == 4
    assert fal.submissions == 4
