"""Which files the command saved for which request: a small index beside the journal, for ``falwrap history``.

The journal knows jobs, not the files a command wrote on this machine (a shared
store may serve many hosts, whose paths mean nothing here). So the commands
that save outputs (``image``, ``video``, ``result``, ``batch``) note the paths
in ``saved.db`` in the command's data directory, and ``history`` shows them.
Nothing is noted when the journal is switched off (``FALWRAP_STORE_URL=memory:``).
Losing the index loses nothing else: it only answers "where did I put it".
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from falwrap.config import FalConfig

__all__ = ["SAVED_FILE", "SavedFiles", "note_saved", "open_saved"]

#: The index's file name in the command's data directory.
SAVED_FILE = "saved.db"

#: SQLite waits this long for another process's write before giving up.
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS saved_files (
    request_id TEXT NOT NULL,
    path TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    PRIMARY KEY (request_id, path)
)
"""


class SavedFiles:
    """The saved-files index at ``path`` (created when missing). Thread-safe; safe across processes.

    Args:
        path: The database file.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def note(self, request_id: str, paths: Sequence[Path]) -> None:
        """Remember that ``paths`` hold the outputs of ``request_id``.

        Args:
            request_id: fal's request id.
            paths: The files written (made absolute here).
        """
        when = datetime.now(timezone.utc).isoformat()
        rows = [(request_id, str(p.resolve()), when) for p in paths]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO saved_files VALUES (?, ?, ?)", rows)

    def lookup(self, request_ids: Iterable[str]) -> dict[str, list[str]]:
        """The files noted for each of ``request_ids`` (those with none are left out).

        Args:
            request_ids: fal's request ids.

        Returns:
            Request id -> paths, in the order they were noted.
        """
        wanted = list(dict.fromkeys(request_ids))
        found: dict[str, list[str]] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                # Only placeholders are formatted into the statement; the ids are bound.
                query = f"SELECT request_id, path FROM saved_files WHERE request_id IN ({marks}) ORDER BY rowid"
                rows = self._db.execute(query, chunk).fetchall()
                for request_id, path in rows:
                    found.setdefault(request_id, []).append(path)
        return found

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def open_saved(config: FalConfig, *, offline: bool = False) -> SavedFiles | None:
    """The index in the command's data directory, or ``None`` when the journal is off or it cannot be opened.

    Args:
        config: The command's settings; ``memory:`` means no journal, so no index.
        offline: ``--offline`` runs keep nothing.

    Returns:
        The index (close it), or ``None``.
    """
    from falwrap.cli.store import data_dir

    if offline or config.store_url.startswith("memory:"):
        return None
    try:
        return SavedFiles(data_dir() / SAVED_FILE)
    except (OSError, sqlite3.Error):
        # An unwritable data directory must not fail a command whose output is saved and paid for.
        return None


def note_saved(request_id: str, paths: Sequence[Path], *, offline: bool) -> None:
    """Note ``paths`` for ``request_id`` in the command's index (nothing when the journal is off).

    Args:
        request_id: fal's request id.
        paths: The files written.
        offline: ``--offline`` runs keep nothing.
    """
    from falwrap.cli.store import cli_config

    if not paths:
        return
    saved = open_saved(cli_config(), offline=offline)
    if saved is None:
        return
    # As in open_saved: the index is a convenience; the files are written and reported anyway.
    with contextlib.closing(saved), contextlib.suppress(sqlite3.Error):
        saved.note(request_id, paths)
