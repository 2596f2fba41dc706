"""The HTTP/1.1 server: keep-alive connections, one thread each, fault injection on the wire."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from falwrap.testing.api import FalApi
from falwrap.testing.faults import Fault, FaultQueue
from falwrap.testing.hosts import classify
from falwrap.testing.messages import EventStream, Request, Response

__all__ = ["FakeFalServer"]

logger = logging.getLogger(__name__)

#: How long ``stop()`` waits for connection threads to notice their socket closed.
_JOIN_TIMEOUT_S = 5.0

#: Statuses fal uses that the stdlib has no phrase for.
_REASONS = {499: "Client Closed Request"}


class FakeFalServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that tracks its connections so ``close_all`` can end them.

    Thread-safe. The stock server forgets daemon connection threads, and an
    idle keep-alive connection would keep its thread blocked in ``readline``
    forever; shutting the sockets down is what lets every thread exit.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], api: FalApi, faults: FaultQueue) -> None:
        """Bind (but do not serve yet).

        Args:
            address: ``(host, port)``; port 0 picks a free one.
            api: what answers requests.
            faults: scripted faults, consumed per request.
        """
        self.api = api
        self.faults = faults
        self.stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one accepted connection on its own daemon thread.

        Args:
            request: the accepted socket.
            client_address: the peer.
        """
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), name="fakefal-connection", daemon=True
        )
        with self._lock:
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log unexpected handler errors at debug level; clients hanging up are normal.

        Args:
            request: the socket.
            client_address: the peer.
        """
        logger.debug("FakeFal connection from %s failed", client_address, exc_info=True)

    def close_all(self) -> None:
        """Shut down every open connection and wait for their threads to end."""
        self.stopping.set()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeFal/1"
    sys_version = ""
    # Nagle plus the client's delayed ACK would add 40 ms to every small response.
    disable_nagle_algorithm = True
    server: FakeFalServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (it would also print URLs of every test)."""

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle()

    def do_HEAD(self) -> None:
        """Handle HEAD (file downloads): headers only."""
        self._handle(head=True)

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle()

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._handle()

    def do_DELETE(self) -> None:
        """Handle DELETE (fal serves none: 404)."""
        self._handle()

    def _read_body(self) -> bytes | None:
        """The request body, or ``None`` when the client went away before sending all of it.

        A request cut short (the client killed mid-send) never reaches the application at
        fal, as at any HTTP server: treating the bytes that did arrive as the whole body
        would accept a job nobody asked for.
        """
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline()
                if not line.endswith(b"\n"):
                    return None
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n"):
                        if not trailer:
                            return None
                    return b"".join(parts)
                part = self.rfile.read(size)
                if len(part) < size or not self.rfile.readline().endswith(b"\n"):
                    return None
                parts.append(part)
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return b""
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _handle(self, head: bool = False) -> None:
        server = self.server
        received_at = time.monotonic()
        body = self._read_body()
        if body is None:
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            query=parse_qs(parts.query),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        route = classify("GET" if head else self.command, request.path, request.headers.get("x-forwarded-host"))
        if route.name != "unknown":
            server.api.counters.hit(route.name, received_at, route.action)
        fault = None
        if route.name != "unknown":
            fault = server.faults.take(route.name, lambda: server.api.model_of_request(route))
        shaping = None
        if fault is not None and fault.kind in ("lag", "omit"):
            # These change what the platform API lists, not how the exchange fails.
            shaping, fault = fault, None
        if fault is not None and not fault.after_processing:
            if fault.kind == "stall":
                if server.stopping.wait(fault.seconds) or fault.then == "close":
                    self._reset(graceful=True)
                    return
            else:
                self._apply(fault)
                return
        answer = server.api.dispatch(route, request, shaping)
        cut = None
        if fault is not None and fault.kind == "cut":
            cut, fault = fault.events, None
        if fault is not None:
            if fault.kind == "stall":
                if server.stopping.wait(fault.seconds) or fault.then == "close":
                    self._reset(graceful=True)
                    return
            else:
                self._apply(fault)
                return
        if isinstance(answer, EventStream):
            self._send_stream(answer, cut, statuses=route.name == "stream")
        else:
            self._send(answer, head=head)

    def _apply(self, fault: Fault) -> None:
        if fault.kind == "reset":
            self._reset(graceful=False)
        else:
            self._send(Response(fault.status, fault.body, fault.headers))

    def _reset(self, graceful: bool) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN:
        # what a crashed proxy looks like to the client.
        if not graceful:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _send(self, response: Response, head: bool = False) -> None:
        reason = _REASONS.get(response.status) or self.responses.get(response.status, ("Error",))[0]
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        names = set()
        for name, value in response.headers:
            lines.append(f"{name}: {value}")
            names.add(name.lower())
        if "content-type" not in names and response.body:
            lines.append("Content-Type: application/octet-stream")
        lines.append(f"Content-Length: {len(response.body)}")
        lines.append(f"Date: {self.date_time_string()}")
        if self.close_connection:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write per response: fewer syscalls, no small-packet delays.
        self.wfile.write(head_bytes if head else head_bytes + response.body)

    def _send_stream(self, stream: EventStream, cut_after: int | None = None, *, statuses: bool = False) -> None:
        """Send an event stream; with ``cut_after``, drop the connection after that many ``data:`` events.

        What is ready at once goes out in one write, as a server on another machine
        reaches the client: the head with the first event, and, on a status stream
        (``statuses``), the end of the body with COMPLETED, its last event. Written
        apart, each piece would cost a client on the same cores a wake-up of its own.
        """
        lines = ["HTTP/1.1 200 OK", *(f"{name}: {value}" for name, value in stream.headers)]
        lines += ["Transfer-Encoding: chunked", f"Date: {self.date_time_string()}"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if cut_after == 0:
            self.wfile.write(head)
            self._reset(graceful=True)
            return
        sent = 0
        chunks = stream.chunks()
        for chunk in chunks:
            data = chunk.startswith(b"data:")
            # COMPLETED is a status stream's last event: a stream that got that far ends whole.
            last = statuses and data and json.loads(chunk[5:])["status"] == "COMPLETED"
            self.wfile.write(head + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" + (_END if last else b""))
            head = b""
            if last:
                _close(chunks)
                return
            if not data:
                continue
            sent += 1
            if cut_after is not None and sent >= cut_after:
                _close(chunks)
                self._reset(graceful=True)
                return
        self.wfile.write(head + _END)


#: The end of a chunked body.
_END = b"0\r\n\r\n"


def _close(chunks: Iterator[bytes]) -> None:
    """Finish a stream's generator now, not when it is collected."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
