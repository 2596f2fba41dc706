"""``DIR/manifest.jsonl``: one line per input of ``falwrap batch``, written as each job ends.

Each line is one JSON object::

    {"id": "sku-1", "line": 3, "model": "fal-ai/flux/dev", "request_id": "...", "state": "succeeded",
     "files": ["/abs/DIR/sku-1.jpg"], "cost": "0.025", "error": null}

``state`` is ``succeeded`` (outputs saved) or why not: ``not_saved`` (the job
succeeded, saving failed; a rerun saves it from the journal without paying
again), ``failed``, ``cancelled``, ``unknown`` or ``running`` (fal has not said
yet; a rerun follows it), ``not_sent`` (refused before anything was sent: a bad
line, the daily budget).

Durability: every line is one ``write`` on a descriptor opened for appending,
then ``fsync``, so a crash (even SIGKILL) leaves whole lines. A run starts by
rewriting the file (to a temporary file, renamed over it) without the lines it
is about to run again, so the manifest keeps one line per id; a line torn by a
dying disk or a hand edit is dropped then.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_NAME", "Manifest"]

MANIFEST_NAME = "manifest.jsonl"


def _encode(entry: Mapping[str, Any]) -> bytes:
    return (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory is; some platforms cannot open one.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Manifest:
    """The manifest of one output directory. Thread-safe: :meth:`write` may be called from any thread.

    Args:
        path: ``DIR/manifest.jsonl``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        #: Lines of the file that were not whole JSON objects with an id (dropped at :meth:`start`).
        self.unreadable = 0
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for raw in data.splitlines():
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                self.unreadable += 1
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                self.unreadable += 1
                continue
            self.entries[entry["id"]] = entry

    def done(self, ident: str) -> bool:
        """Whether the line ``ident`` succeeded in an earlier run and its files are still there.

        Args:
            ident: The line's id.

        Returns:
            ``True`` when the manifest says ``succeeded`` and every file it lists exists.
        """
        entry = self.entries.get(ident)
        if entry is None or entry.get("state") != "succeeded":
            return False
        files = entry.get("files")
        return isinstance(files, list) and all(isinstance(f, str) and Path(f).is_file() for f in files)

    def start(self, rerun: Iterable[str]) -> None:
        """Rewrite the file without the lines of ``rerun`` (and any unreadable line), then open it for appending.

        Args:
            rerun: Ids this run is about to run (again).
        """
        dropped = set(rerun)
        kept = [entry for ident, entry in self.entries.items() if ident not in dropped]
        self.entries = {entry["id"]: entry for entry in kept}
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=directory)
        try:
            _write_all(fd, b"".join(_encode(entry) for entry in kept))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_dir(directory)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append one line, durably (one write, then fsync).

        Args:
            entry: The line; ``entry["id"]`` names it.

        Raises:
            RuntimeError: :meth:`start` was not called.
        """
        data = _encode(entry)
        with self._lock:
            if self._fd is None:
                msg = "Manifest.write before Manifest.start"
                raise RuntimeError(msg)
            _write_all(self._fd, data)
            os.fsync(self._fd)
            self.entries[str(entry["id"])] = dict(entry)

    def close(self) -> None:
        """Close the file (lines written stay written)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
