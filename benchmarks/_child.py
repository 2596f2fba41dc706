"""A benchmark server in a child process, driven over a pipe (stdlib only, so MiniFal's child imports no falwrap).

The child runs ``target(conn, *args)``: it sends its first message (its URL, and
for FakeFal its key), then answers ``(command, args)`` pairs until ``stop``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from typing import Any

__all__ = ["ChildServer"]


class ChildServer:
    """The parent's side: start, ask, stop; the observations every benchmark server answers.

    Uses the ``spawn`` start method: the parent may already run threads.
    """

    def __init__(self) -> None:
        self._conn: multiprocessing.connection.Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.url = ""
        self.key = ""

    def _start(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> Any:
        """Start the child and return its first message."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=target, args=(child, *args), name=name, daemon=True)
        self._process.start()
        self._conn = parent
        return parent.recv()

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None and self._process is not None:
            self._ask("stop")
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
            self._conn.close()

    def _ask(self, command: str, *args: Any) -> Any:
        assert self._conn is not None, f"use {type(self).__name__} as a context manager"
        self._conn.send((command, args))
        return self._conn.recv()

    @property
    def counters(self) -> dict[str, int]:
        """Requests received per route."""
        counts: dict[str, int] = self._ask("counters")
        return counts

    def reset_counters(self) -> None:
        """Zero the counters."""
        self._ask("reset")

    def set_latency(self, seconds: float) -> None:
        """Run time of jobs submitted from now on."""
        self._ask("set_latency", seconds)

    def cpu_seconds(self) -> float:
        """CPU time the server's process has used so far."""
        seconds: float = self._ask("cpu")
        return seconds

    def completed(self) -> dict[str, float]:
        """When each job completed, by its ``prompt`` (``time.monotonic``: one clock on one machine)."""
        times: dict[str, float] = self._ask("completed")
        return times
