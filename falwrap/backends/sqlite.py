"""The ``sqlite:`` store: the journal and the limits in one SQLite file, shared by every process on the machine.

``sqlite:///absolute/path/to/falwrap.db`` (the directory is created when missing).
Built on the standard library's :mod:`sqlite3`; the store is a
:class:`~falwrap.backends.sql_store.SqlStore`, and the statements are those of
:mod:`falwrap.backends.sql_journal` and :mod:`falwrap.backends.sql_limits`.

How it is made safe and fast for many threads and several processes:

* WAL mode: readers never block the writer nor each other, and a commit appends
  to the log instead of rewriting pages.
* ``synchronous=NORMAL``: in WAL mode a commit is then durable against the
  process crashing or being killed (what the journal must survive), and the file
  is never corrupted; only a power loss or an OS crash may lose the last
  commits before a checkpoint. ``FULL`` would add an fsync to every commit (one
  to several milliseconds on common disks), several times the cost of the whole job's
  journaling, for a guarantee that a machine which lost power does not need
  (its in-flight calls are lost with it anyway).
* Every write is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write
  lock up front, so a budget check and its hold, or an idempotency claim, are
  atomic across processes; other processes wait for it (``busy_timeout``).
* Inside one process, writers queue on a lock of their own before taking
  SQLite's: SQLite's busy handler waits by sleeping (1, 2, 5, 10... ms), which
  under 64 contending threads costs far more than the transactions do; the
  in-process lock hands over at once and leaves the busy handler to the rare
  contention between processes.
* Writes go through one connection per store, taken under that lock; reads
  through one connection per thread (WAL readers run side by side). Under 64
  threads, ``benchmarks/bench_journal.py`` measured the single writer about 25%
  faster than a connection per thread for writes too (median 1850 against 1500
  jobs/s): one connection keeps its page cache warm, and no connection has to
  catch up with the log others wrote.

The clock of the shared limits is this machine's wall clock (``time.time()``),
which every process on the machine shares; waits are slept out on the monotonic
clock, so a clock step during a wait changes nothing, and a step backwards
between calls can only make the schedule slower, never faster.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from falwrap.backends.sql import Dialect
from falwrap.backends.sql_store import SqlStore
from falwrap.errors import BackendUnavailableError, ConfigurationError

__all__ = ["BUSY_TIMEOUT", "SQLITE", "SqliteDatabase", "SqliteStore", "open_database", "path_of"]

#: The dialect: ``?`` placeholders, rowid keys, no row locks or named locks (writes
#: are serial), and this machine's clock.
SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    serial="INTEGER PRIMARY KEY",
    for_update="",
    clock_sql=None,
    lock_sql=None,
)

#: Seconds a write waits for another process's transaction before giving up
#: (BackendUnavailableError). Transactions last well under a millisecond, so this
#: is only reached when another process holds the file locked (e.g. a stuck tool).
BUSY_TIMEOUT = 5.0

#: Per-connection settings; see the module docstring for why each one.
_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA temp_store = MEMORY",
)

# One in-process write lock per database file, shared by every store on it.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()
_DATABASES: weakref.WeakSet[SqliteDatabase] = weakref.WeakSet()


def _write_lock(path: str) -> threading.Lock:
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(path)
        if lock is None:
            lock = _WRITE_LOCKS[path] = threading.Lock()
        return lock


def _after_fork_in_child() -> None:
    # A lock held by a parent thread at fork time would stay held in the child forever.
    global _WRITE_LOCKS_GUARD  # noqa: PLW0603 - replaced, not mutated: the old one may be held
    _WRITE_LOCKS_GUARD = threading.Lock()
    _WRITE_LOCKS.clear()
    for db in list(_DATABASES):
        db._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def path_of(url: str) -> Path:
    """The file a ``sqlite:///absolute/path.db`` URL names.

    Raises:
        ConfigurationError: the URL is not of that form, or the path is relative.
    """
    if not isinstance(url, str) or not url.lower().startswith("sqlite:"):
        msg = f"FALWRAP_STORE_URL={url!r} is not a SQLite URL: expected sqlite:///absolute/path/to/falwrap.db."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
    rest = url[len("sqlite:") :]
    # sqlite:///abs/path and SQLAlchemy's sqlite:////abs/path both name /abs/path.
    if not rest.startswith("///") or "?" in rest or "#" in rest:
        msg = (
            f"FALWRAP_STORE_URL={url!r} is not valid: expected sqlite:///absolute/path/to/falwrap.db "
            "(three slashes, then an absolute path; no query)."
        )
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
    path = Path("/" + unquote(rest).lstrip("/"))
    if not path.is_absolute() or path.name in {"", ".", ".."}:
        msg = (
            f"FALWRAP_STORE_URL={url!r} does not name an absolute file path: a relative path would "
            "depend on the directory each process starts in. Use sqlite:///absolute/path/to/falwrap.db."
        )
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
    return path


def _unusable(path: Path, exc: BaseException) -> ConfigurationError:
    msg = (
        f"The SQLite store at {path} cannot be used ({type(exc).__name__}: {exc}). Check that the "
        "directory is writable and the file is a falwrap database, or set FALWRAP_STORE_URL to another path."
    )
    return ConfigurationError(msg, variable="FALWRAP_STORE_URL")


class SqliteDatabase:
    """One SQLite file's connections (a writer, a reader per thread) and transactions; see the module docstring.

    Args:
        path: The database file (its directory must exist).

    Raises:
        ConfigurationError: the file cannot be opened, is not a database, or cannot be
            put in WAL mode.
    """

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self._path = path
        self._key = os.path.realpath(path)
        self._write_lock = _write_lock(self._key)
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        # Connections a thread is using right now, with how many uses are open: close() leaves
        # these to their thread (closing a connection under a running statement can crash).
        self._busy: dict[sqlite3.Connection, int] = {}
        self._conns_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        _DATABASES.add(self)
        try:
            mode = self._set_wal()
        except sqlite3.Error as exc:
            self.close()
            raise _unusable(path, exc) from exc
        if mode.lower() != "wal":
            self.close()
            raise _unusable(path, RuntimeError(f"journal_mode is {mode}, WAL could not be set"))

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _set_wal(self) -> str:
        """Put the file in WAL mode (persistent: later connections find it) and return the mode now."""
        conn = self._connection()
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                # Switching to WAL needs the file to itself for an instant and, unlike a
                # transaction, reports "locked" at once instead of waiting: another process
                # opening the new file at the same moment holds it. Wait as a write would.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            msg = f"The SQLite store at {self._path} was closed; open a new one."
            raise BackendUnavailableError(msg)
        # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
        # check_same_thread=False: the writer serves every thread (one at a time, under the
        # write lock), and close() closes every thread's reader.
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's reader."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == self._pid and not self._closed:
            return conn
        conn = self._open()
        local.conn, local.pid = conn, self._pid
        return conn

    def _unavailable(self, exc: sqlite3.Error) -> BackendUnavailableError:
        msg = f"The SQLite store at {self._path} failed ({type(exc).__name__}: {exc}); nothing was changed."
        return BackendUnavailableError(msg)

    @contextmanager
    def _using(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Mark ``conn`` in use for the block; a close() meanwhile closes it when the block ends."""
        with self._conns_lock:
            if self._closed:
                msg = f"The SQLite store at {self._path} was closed; open a new one."
                raise BackendUnavailableError(msg)
            self._busy[conn] = self._busy.get(conn, 0) + 1
        try:
            yield conn
        finally:
            self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._conns_lock:
            left = self._busy[conn] - 1
            if left:
                self._busy[conn] = left
            else:
                del self._busy[conn]
            close_now = self._closed and not left
        if close_now:
            conn.close()

    @contextmanager
    def write(self, *locks: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction on the writer connection (``locks``: the file lock covers them)."""
        with self._write_lock:
            conn = self._writer
            if conn is None or self._closed:
                conn = self._writer = self._open()
            with self._using(conn):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    raise self._unavailable(exc) from exc
                try:
                    yield conn
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.OperationalError):
                        raise self._unavailable(exc) from exc
                    raise
                try:
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise self._unavailable(exc) from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for reads (each statement sees the last commit)."""
        with self._using(self._connection()) as conn:
            try:
                yield conn
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc

    def close(self) -> None:
        """Close the writer and every thread's reader; idempotent.

        A connection another thread is using right now is closed by that thread as its
        statement ends (its next use finds the store closed): closing it under a running
        statement could crash the interpreter.
        """
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
            idle = [conn for conn in conns if conn not in self._busy]
        for conn in idle:
            conn.close()

    def _after_fork_in_child(self) -> None:
        # The parent's connections must not be used (nor closed) in the child: it opens its own.
        self._conns_lock = threading.Lock()
        self._conns = []
        self._busy = {}
        self._writer = None
        self._pid = os.getpid()
        self._write_lock = _write_lock(self._key)


def open_database(url: str) -> SqliteDatabase:
    """The SQLite database ``url`` names, its directory created when missing (schema not migrated).

    Raises:
        ConfigurationError: the URL is invalid, or the file cannot be created or opened.
    """
    path = path_of(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(path, exc) from exc
    return SqliteDatabase(path)


class SqliteStore(SqlStore[SqliteDatabase]):
    """The ``sqlite:`` store: a :class:`~falwrap.backends.sql_journal.SqlJournal` and the SQL limits on one file.

    Thread-safe and safe across processes on one machine. Open it with :meth:`from_url`.

    Args:
        db: The database, its schema migrated.
        namespace: The namespace rows are written under.
    """

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> SqliteStore:
        """Open (creating or upgrading) the database ``url`` names.

        Args:
            url: ``sqlite:///absolute/path/to/falwrap.db``.
            namespace: The namespace rows are written under (a hash of the API key).

        Returns:
            The store; close it with :meth:`close`.

        Raises:
            ConfigurationError: the URL or namespace is invalid; the path is relative,
                not writable, or not a database; or its schema is newer than this falwrap.
        """
        return cls._open(namespace, lambda: open_database(url))

    @classmethod
    def _where(cls, db: SqliteDatabase) -> str:
        return str(db.path)

    @classmethod
    def _migration_failure(cls, db: SqliteDatabase, exc: Exception) -> ConfigurationError | None:
        if not isinstance(exc, BackendUnavailableError):
            return None
        return _unusable(db.path, exc.__cause__ or exc)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path
