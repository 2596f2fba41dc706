"""A real HTTP server on 127.0.0.1 that records webhook deliveries and answers them from a script."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST as the receiver saw it."""

    path: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float

    def header(self, name: str) -> str:
        """The value of one header (names case-insensitive)."""
        return next(value for key, value in self.headers if key.lower() == name.lower())


class Receiver:
    """Records every POST; answers each with the next scripted status (then ``default``)."""

    def __init__(self, statuses: Iterable[int] = (), default: int = 200) -> None:
        self.received: list[Received] = []
        self._statuses = deque(statuses)
        self._default = default
        self._cond = threading.Condition()
        self.url = ""
        #: Sent as ``Location`` with every 3xx answer.
        self.redirect_to = ""

    def script(self, *statuses: int) -> None:
        """Answer the next POSTs with these statuses."""
        with self._cond:
            self._statuses.extend(statuses)

    def answer(self, request: Received) -> int:
        """Record a POST and pick its status."""
        with self._cond:
            self.received.append(request)
            self._cond.notify_all()
            return self._statuses.popleft() if self._statuses else self._default

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` POSTs arrived; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} deliveries, got {len(self.received)}")
            return list(self.received)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        """Record the delivery and answer with the scripted status."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Received(self.path, list(self.headers.items()), body, time.monotonic())
        status = self.server.receiver.answer(request)
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", self.server.receiver.redirect_to)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def running_receiver(statuses: Iterable[int] = (), default: int = 200) -> Iterator[Receiver]:
    """A started receiver on a free port; ``receiver.url`` is its ``/hook`` URL."""
    receiver = Receiver(statuses, default)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.receiver = receiver  # type: ignore[attr-defined]
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
