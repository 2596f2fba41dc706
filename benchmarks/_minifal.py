"""MiniFal: a minimal fal queue server, independent of falwrap, for the client benchmarks.

Why it exists: a benchmark that measures a client against the project's own
emulator (FakeFal) measures the client *and* whatever the emulator happens to do
on the wire. MiniFal is a second, independent implementation of the same routes
(it imports nothing from falwrap), written the way a production asyncio server
answers: one event loop, every route about as cheap as the next, and what is
ready at once written at once (a plain answer in one write; a status stream's
head with its first event, each later event as it happens, COMPLETED with the
end of the body), as a server on another machine reaches the client. Running
the same measurement against both servers shows which figures belong to the
client.

What it serves (the subset of fal's queue API the benchmarks use):

* ``POST /{owner}/{alias}[/{path}]``: accept a job; answer ``IN_QUEUE`` with the
  request id and queue URLs on ``https://queue.fal.run`` (as fal does; clients
  route fal's hosts to this server themselves).
* ``GET .../requests/{id}/status``: ``202`` while the job runs (``IN_PROGRESS``),
  ``200`` with ``COMPLETED`` and ``metrics.inference_time`` when done.
* ``GET .../requests/{id}/status/stream``: ``text/event-stream``, one ``data:``
  event per status change, ``COMPLETED`` last, then the end of the response; a
  ``: keep-alive`` comment every 5 s of silence.
* ``GET .../requests/{id}``: the output (an image list like flux's) with
  ``x-fal-billable-units``; ``400`` while the job runs.
* ``PUT .../requests/{id}/cancel``: ``202`` or ``400`` when already completed.

What it leaves out, unlike fal: authentication is not checked (the key is sent
and ignored), every job starts at once (no account-wide concurrency, so never
``IN_QUEUE`` after the submit answer), no logs, no webhooks, no failures, no
files, no TLS. A job runs ``latency`` seconds plus, with ``spread``, a uniform
random part. It runs in a child process (:class:`RemoteMiniFal`) so that its CPU
is measured apart from the client's.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.connection
import random
import threading
import time
import uuid
from collections import Counter
from email.utils import formatdate
from typing import Any

from benchmarks._child import ChildServer

__all__ = ["MiniFal", "RemoteMiniFal"]

#: Silence after which a status stream sends a keep-alive comment (fal: at most every 10 s).
KEEPALIVE_S = 5.0

#: Where fal's queue lives; answers name it and clients route it to this server.
QUEUE_HOST = "https://queue.fal.run"

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class _Job:
    __slots__ = ("app", "arguments", "completed", "completed_at", "request_id", "started_at")

    def __init__(self, request_id: str, app: str, arguments: Any, started_at: float, latency: float) -> None:
        self.request_id = request_id
        self.app = app
        self.arguments = arguments
        self.started_at = started_at
        self.completed_at = started_at + latency
        # Set when the job completes; status streams wait on it.
        self.completed = asyncio.Event()


class MiniFal:
    """The server's state and routes; runs on one asyncio loop (not thread-safe: loop thread only)."""

    def __init__(self, latency: float = 0.0, spread: float = 0.0) -> None:
        self.latency = latency
        self.spread = spread
        self._random = random.Random(12)
        self.jobs: dict[str, _Job] = {}
        self.counters: Counter[str] = Counter()
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- routes --------------------------------------------------------------------------------

    def route(self, method: str, path: str) -> tuple[str, str, str]:
        """``(route, app, request_id)`` for a request line (route ``unknown`` when fal serves none)."""
        segs = [s for s in path.split("?", 1)[0].split("/") if s]
        if len(segs) < 2:
            return "unknown", "", ""
        app = f"{segs[0]}/{segs[1]}"
        rest = segs[2:]
        if method == "POST":
            return "submit", "/".join(segs), ""
        if len(rest) >= 2 and rest[0] == "requests":
            tail = rest[2:]
            if method == "GET" and tail == ["status"]:
                return "status", app, rest[1]
            if method == "GET" and tail == ["status", "stream"]:
                return "stream", app, rest[1]
            if method == "GET" and not tail:
                return "result", app, rest[1]
            if method == "PUT" and tail == ["cancel"]:
                return "cancel", app, rest[1]
        return "unknown", app, ""

    def submit(self, endpoint: str, body: bytes) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Accept a job."""
        try:
            arguments = json.loads(body or b"{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return 422, {"detail": [{"loc": ["body"], "msg": "Input should be a valid dictionary"}]}, []
        assert self.loop is not None
        request_id = str(uuid.uuid4())
        app = "/".join(endpoint.split("/")[:2])
        latency = self.latency + (self._random.uniform(0.0, self.spread) if self.spread else 0.0)
        job = _Job(request_id, app, arguments, time.monotonic(), latency)
        self.jobs[request_id] = job
        self.loop.call_at(self.loop.time() + latency, job.completed.set)
        payload = {"status": "IN_QUEUE", "request_id": request_id, **self._urls(job), "queue_position": 0}
        return 200, payload, [("x-fal-request-id", request_id)]

    def _urls(self, job: _Job) -> dict[str, str]:
        base = f"{QUEUE_HOST}/{job.app}/requests/{job.request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def done(self, job: _Job) -> bool:
        """Whether the job has completed (by the clock, so a status poll never lags the timer)."""
        if not job.completed.is_set() and time.monotonic() >= job.completed_at:
            job.completed.set()
        return job.completed.is_set()

    def status_payload(self, job: _Job) -> dict[str, Any]:
        """The job's status object, as fal's status route and stream send it."""
        payload: dict[str, Any] = {"status": "COMPLETED" if self.done(job) else "IN_PROGRESS"}
        payload.update(request_id=job.request_id, **self._urls(job), logs=None)
        if payload["status"] == "COMPLETED":
            payload["metrics"] = {"inference_time": round(job.completed_at - job.started_at, 4)}
        return payload

    def output(self, job: _Job) -> dict[str, Any]:
        """A flux-like output of about the size fal sends."""
        return {
            "images": [
                {
                    "url": f"https://v3.fal.media/files/{job.request_id}-0.jpg",
                    "width": 1024,
                    "height": 768,
                    "content_type": "image/jpeg",
                }
            ],
            "timings": {"inference": round(job.completed_at - job.started_at, 4)},
            "seed": 42,
            "has_nsfw_concepts": [False],
            "prompt": job.arguments.get("prompt", ""),
        }


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection (requests with Content-Length bodies; no pipelining needed)."""

    def __init__(self, fal: MiniFal) -> None:
        self.fal = fal
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").split("\r\n")
        method, target, _version = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return
        body = self.buffer[head_end + 4 : end]
        self.buffer = self.buffer[end:]
        self._handle(method, target, body)

    def _handle(self, method: str, target: str, body: bytes) -> None:
        fal = self.fal
        route, app, request_id = fal.route(method, target)
        fal.counters[route] += 1
        if route == "submit":
            self._send(*fal.submit(app, body))
            return
        job = fal.jobs.get(request_id)
        if route == "unknown" or job is None or job.app != app:
            self._send(404, {"detail": "Request not found"}, [])
        elif route == "status":
            payload = fal.status_payload(job)
            self._send(200 if payload["status"] == "COMPLETED" else 202, payload, [("x-fal-request-id", request_id)])
        elif route == "result":
            if not fal.done(job):
                self._send(400, {"detail": "Request is still in progress"}, [])
            else:
                self._send(200, fal.output(job), [("x-fal-request-id", request_id), ("x-fal-billable-units", "1")])
        elif route == "cancel":
            if fal.done(job):
                self._send(400, {"status": "ALREADY_COMPLETED"}, [])
            else:
                self._send(202, {"status": "CANCELLATION_REQUESTED"}, [])
        else:
            self.busy = True
            # Kept so the running stream is not collected before it ends.
            self.task = asyncio.ensure_future(self._stream(job))

    def _send(self, status: int, payload: Any, headers: list[tuple[str, str]]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines += [f"content-length: {len(body)}", f"date: {formatdate(usegmt=True)}"]
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if self.buffer:
            self._next()

    async def _stream(self, job: _Job) -> None:
        transport = self.transport
        assert transport is not None
        head = [
            "HTTP/1.1 200 OK",
            "content-type: text/event-stream",
            "cache-control: no-cache",
            f"x-fal-request-id: {job.request_id}",
            "transfer-encoding: chunked",
            f"date: {formatdate(usegmt=True)}",
        ]
        out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        last = None
        while not transport.is_closing():
            payload = self.fal.status_payload(job)
            if payload["status"] != last:
                last = payload["status"]
                event = f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
                out += b"%x\r\n%s\r\n" % (len(event), event)
                if last == "COMPLETED":
                    break
            transport.write(out)
            out = b""
            try:
                await asyncio.wait_for(job.completed.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                comment = b": keep-alive\n\n"
                out = b"%x\r\n%s\r\n" % (len(comment), comment)
        # COMPLETED goes out with the end of the body: both are ready at once.
        transport.write(out + b"0\r\n\r\n")
        self.busy = False
        if self.buffer:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


# -- in a child process ---------------------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection, latency: float, spread: float) -> None:
    """Child process: run MiniFal's loop on a thread, answer the parent's commands on this one."""
    fal = MiniFal(latency, spread)
    loop = asyncio.new_event_loop()
    fal.loop = loop
    ready = threading.Event()
    address: list[tuple[str, int]] = []

    async def start() -> None:
        server = await loop.create_server(lambda: _Connection(fal), "127.0.0.1", 0, backlog=1024)
        address.append(server.sockets[0].getsockname()[:2])
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    threading.Thread(target=run, name="minifal", daemon=True).start()
    ready.wait()
    host, port = address[0]
    conn.send(f"http://{host}:{port}")

    def on_loop(function: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(_call(function), loop)
        return future.result()

    while True:
        command, args = conn.recv()
        if command == "stop":
            loop.call_soon_threadsafe(loop.stop)
            conn.send(None)
            return
        if command == "counters":
            conn.send(on_loop(lambda: dict(fal.counters)))
        elif command == "reset":
            conn.send(on_loop(fal.counters.clear))
        elif command == "set_latency":
            conn.send(on_loop(lambda value=args[0]: setattr(fal, "latency", value)))
        elif command == "completed":
            conn.send(
                on_loop(lambda: {str(job.arguments.get("prompt")): job.completed_at for job in fal.jobs.values()})
            )
        elif command == "cpu":
            conn.send(time.process_time())
        else:  # pragma: no cover - a programming error in the parent
            conn.send(ValueError(command))


async def _call(function: Any) -> Any:
    return function()


class RemoteMiniFal(ChildServer):
    """MiniFal in its own process, with the interface of ``RemoteFakeFal`` (a context manager).

    Args:
        latency: Run time of every job, seconds.
        spread: Each job runs up to this much longer (uniformly at random), seconds.
    """

    def __init__(self, latency: float = 0.0, spread: float = 0.0) -> None:
        super().__init__()
        self._latency = latency
        self._spread = spread
        #: MiniFal checks no key; clients send this one.
        self.key = "minifal-key"

    def __enter__(self) -> RemoteMiniFal:
        self.url = self._start(_serve, (self._latency, self._spread), "minifal")
        return self
