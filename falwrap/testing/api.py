"""fal's HTTP API as the emulator answers it: routing, auth and every route's behaviour."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs

from falwrap.testing.billing import BillingRecord, billable_units
from falwrap.testing.counters import RequestCounters
from falwrap.testing.jobs import Job, JobBoard, WallClock, logs_of, next_log_at
from falwrap.testing.messages import EventStream, Request, Response, json_response
from falwrap.testing.models import FakeModel, JobFailure
from falwrap.testing.outputs import FileStore, build_output, new_file_name
from falwrap.testing.webhook_keys import WebhookSigner
from falwrap.testing.webhooks import webhook_url_problem

__all__ = ["FalApi", "Route"]

#: Status streams send a comment at least this often; the JS client gives up after 15 s of silence.
KEEPALIVE_S = 5.0

#: fal's platform API accepts 1..50 endpoint ids per pricing request.
MAX_PRICING_IDS = 50

_UNIT_NAMES = {
    "megapixel": "megapixels",
    "image": "image",
    "second": "seconds",
    "video": "video",
    "compute_second": "compute seconds",
}
_NO_USER = {"detail": "No user found for Key ID and Secret"}
_TRUTHY = {"1", "true", "True", "yes"}


@attrs.frozen
class Route:
    """Which route a request is, and what it is about.

    Attributes:
        name: a counter/fault route name, or ``"unknown"``.
        action: the handler to run (a finer name than ``name``, e.g. ``upload_put``).
        app: ``owner/alias`` (queue routes) or the endpoint id (submit).
        request_id: for status, stream, result and cancel.
        tail: the file name for file routes.
    """

    name: str
    action: str
    app: str = ""
    request_id: str = ""
    tail: str = ""


def classify(method: str, path: str) -> Route:
    """Map a method and path to a route.

    Args:
        method: the HTTP method.
        path: the URL path.

    Returns:
        The route; ``Route("unknown", "unknown")`` for anything fal does not serve.
    """
    segs = [s for s in path.split("/") if s]
    if not segs:
        return Route("unknown", "unknown")
    if segs[0] == "files":
        if method == "POST" and segs[1:] == ["upload"]:
            return Route("upload", "upload_cdn")
        if method in ("GET", "HEAD") and len(segs) > 1:
            return Route("file", "file", tail="/".join(segs[1:]))
        return Route("unknown", "unknown")
    if segs[0] == "storage":
        if method == "POST" and segs[1:] == ["upload", "initiate"]:
            return Route("upload", "upload_initiate")
        if method == "PUT" and segs[1:3] == ["upload", "put"] and len(segs) == 4:
            return Route("upload", "upload_put", tail=segs[3])
        if method == "POST" and segs[1:] == ["auth", "token"]:
            return Route("upload", "upload_token")
        return Route("unknown", "unknown")
    if segs[0] == "v1" and segs[1:] == ["models", "pricing"] and method == "GET":
        return Route("pricing", "pricing")
    if segs == [".well-known", "jwks.json"] and method == "GET":
        return Route("jwks", "jwks")
    if "requests" in segs[2:]:
        index = segs.index("requests", 2)
        app, rest = "/".join(segs[:index]), segs[index + 1 :]
        if method == "GET" and len(rest) == 1:
            return Route("result", "result", app, rest[0])
        if method == "GET" and rest[1:] == ["status"]:
            return Route("status", "status", app, rest[0])
        if method == "GET" and rest[1:] == ["status", "stream"]:
            return Route("stream", "stream", app, rest[0])
        if method == "PUT" and rest[1:] == ["cancel"]:
            return Route("cancel", "cancel", app, rest[0])
        return Route("unknown", "unknown")
    if method == "POST" and len(segs) >= 2:
        return Route("submit", "submit", "/".join(segs))
    return Route("unknown", "unknown")


@attrs.define
class _PendingFailure:
    failure: JobFailure
    remaining: int
    model: str | None


def _platform_error(status: int, error_type: str, message: str) -> Response:
    return json_response(
        status,
        {
            "error": {
                "type": error_type,
                "message": message,
                "docs_url": "https://docs.fal.ai/platform-apis/v1/errors",
                "request_id": str(uuid.uuid4()),
            }
        },
    )


@attrs.define
class FalApi:
    """The emulated service behind the HTTP server.  Thread-safe.

    Args:
        key: the only API key accepted.
        models: endpoint id -> model.
        concurrency: jobs IN_PROGRESS at once, account-wide.
        latency: when set, every model's run time in seconds.
        base_url: callable returning the server's URL (known only once it listens).
        signer: the webhook signing keys, published at ``/.well-known/jwks.json``.
    """

    key: str = attrs.field(repr=False)
    models: dict[str, FakeModel]
    concurrency: int
    latency: float | None
    base_url: Callable[[], str]
    clock: Callable[[], float] = time.monotonic
    signer: WebhookSigner = attrs.field(factory=WebhookSigner)
    counters: RequestCounters = attrs.field(factory=RequestCounters, init=False)
    files: FileStore = attrs.field(factory=FileStore, init=False)
    board: JobBoard = attrs.field(init=False)
    billing: list[BillingRecord] = attrs.field(factory=list, init=False)
    _wall: WallClock = attrs.field(factory=WallClock, init=False)
    _prices: dict[str, Decimal] = attrs.field(factory=dict, init=False)
    _latencies: dict[str, float] = attrs.field(factory=dict, init=False)
    _pending_failures: deque[_PendingFailure] = attrs.field(factory=deque, init=False)
    _upload_names: set[str] = attrs.field(factory=set, init=False)
    _cdn_tokens: set[str] = attrs.field(factory=set, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.board = JobBoard(self.concurrency, self._complete, self.clock)

    # -- configuration used by FakeFal --------------------------------------

    def price_of(self, model: FakeModel) -> Decimal:
        """The model's current unit price (``set_price`` wins over the model's own).

        Args:
            model: the model.

        Returns:
            USD per unit.
        """
        with self._lock:
            return self._prices.get(model.id, model.unit_price_usd)

    def set_price(self, model_id: str, price: Decimal) -> None:
        """Change a model's unit price for pricing answers and later billing.

        Args:
            model_id: a served endpoint id.
            price: USD per unit.

        Raises:
            KeyError: for a model the emulator does not serve.
        """
        if model_id not in self.models:
            raise KeyError(model_id)
        with self._lock:
            self._prices[model_id] = Decimal(str(price))

    def set_latency(self, seconds: float, model_id: str | None = None) -> None:
        """Change the simulated run time of jobs submitted from now on.

        Args:
            seconds: run time.
            model_id: one model, or None for all.
        """
        with self._lock:
            if model_id is None:
                self.latency = float(seconds)
                self._latencies.clear()
            else:
                self._latencies[model_id] = float(seconds)

    def fail_next_jobs(self, count: int, failure: JobFailure, model: str | None = None) -> None:
        """Make the next ``count`` accepted jobs (of ``model``, or any) fail with ``failure``.

        Args:
            count: how many jobs.
            failure: the error they complete with.
            model: restrict to this endpoint id.
        """
        with self._lock:
            self._pending_failures.append(_PendingFailure(failure, count, model))

    def _latency_of(self, model: FakeModel) -> float:
        with self._lock:
            if model.id in self._latencies:
                return self._latencies[model.id]
            return self.latency if self.latency is not None else model.latency_s

    def _take_failure(self, model: FakeModel) -> JobFailure | None:
        with self._lock:
            for pending in self._pending_failures:
                if pending.model is None or pending.model == model.id:
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._pending_failures.remove(pending)
                    return pending.failure
        return model.failure

    def _complete(self, job: Job) -> None:
        # Runs under the board's lock when a job finishes running: must stay cheap,
        # which is why image bytes are only rendered when first downloaded.
        if job.failure is not None:
            return
        inference = (job.completed_at or 0.0) - (job.started_at or 0.0)
        try:
            output = build_output(job.model, job.arguments, job.request_id, self.base_url(), self.files, inference)
        except (ValueError, TypeError) as exc:
            job.failure = JobFailure("value_error", status=422, retryable=False, detail=str(exc))
            return
        units = billable_units(job.model.unit, output, job.arguments, inference)
        price = self.price_of(job.model)
        job.output = output
        job.billable_units = units
        self.billing.append(BillingRecord(job.request_id, job.endpoint_id, units, price, units * price))

    # -- routing ------------------------------------------------------------

    def model_for(self, endpoint: str) -> FakeModel | None:
        """The served model an endpoint path belongs to (longest matching id).

        Args:
            endpoint: ``owner/alias[/path...]``.

        Returns:
            The model, or None.
        """
        segs = endpoint.split("/")
        for end in range(len(segs), 1, -1):
            model = self.models.get("/".join(segs[:end]))
            if model is not None:
                return model
        return None

    def model_of_request(self, route: Route) -> str | None:
        """The endpoint id a request is about, for fault matching.

        Args:
            route: the classified request.

        Returns:
            The submit path, the job's endpoint id, or None.
        """
        if route.name == "submit":
            return route.app
        if route.request_id:
            job = self.board.get(route.request_id)
            return job.endpoint_id if job is not None else None
        return None

    def _authorized(self, request: Request) -> bool:
        return secrets.compare_digest(request.headers.get("authorization", ""), f"Key {self.key}")

    def dispatch(self, route: Route, request: Request) -> Response | EventStream:
        """Answer one request.

        Args:
            route: what ``classify`` made of it.
            request: the request.

        Returns:
            A response or an event stream.
        """
        if route.action == "file":
            return self._file(route, request)
        if route.action == "upload_put":
            return self._upload_put(route, request)
        if route.action == "upload_cdn":
            return self._upload_cdn(request)
        if route.action == "pricing":
            if not self._authorized(request):
                return _platform_error(401, "authorization_error", "Invalid or missing API key.")
            return self._pricing(request)
        if route.action == "jwks":
            return json_response(200, self.signer.jwks(), [("Cache-Control", "public, max-age=3600")])
        if route.action == "unknown":
            return json_response(404, {"detail": "Not Found"})
        if not self._authorized(request):
            return json_response(401, _NO_USER)
        handler: Callable[[Route, Request], Response | EventStream] = getattr(self, f"_{route.action}")
        return handler(route, request)

    # -- queue routes -------------------------------------------------------

    def _urls(self, app: str, request_id: str) -> dict[str, str]:
        base = f"{self.base_url()}/{app}/requests/{request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _submit(self, route: Route, request: Request) -> Response:
        model = self.model_for(route.app)
        if model is None:
            alias = route.app.split("/")[1]
            return json_response(404, {"detail": f"Application '{alias}' not found"})
        try:
            arguments = request.json()
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            detail = [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
            return json_response(422, {"detail": detail})
        webhook_url = request.param("fal_webhook")
        problem = webhook_url_problem(webhook_url) if webhook_url is not None else None
        if problem is not None:
            detail = [{"loc": ["query", "fal_webhook"], "msg": problem, "type": "value_error"}]
            return json_response(422, {"detail": detail})
        now = self.clock()
        start_timeout = _float_or_none(request.headers.get("x-fal-request-timeout"))
        max_queue = _int_or_none(request.param("fal_max_queue_length"))
        job = Job(
            request_id=str(uuid.uuid4()),
            model=model,
            endpoint_id=route.app,
            arguments=arguments,
            submitted_at=now,
            latency_s=self._latency_of(model),
            failure=self._take_failure(model),
            start_deadline=now + start_timeout if start_timeout is not None and start_timeout > 0 else None,
            webhook_url=webhook_url,
        )
        position = self.board.submit(job, max_queue)
        if position is None:
            return json_response(429, {"detail": f"Queue is full (fal_max_queue_length={max_queue})"})
        payload = {
            "status": "IN_QUEUE",
            "request_id": job.request_id,
            **self._urls(model.app, job.request_id),
            "queue_position": position,
        }
        return json_response(200, payload, [("x-fal-request-id", job.request_id)])

    def _lookup(self, route: Route) -> Job | None:
        job = self.board.get(route.request_id)
        if job is None or not (job.endpoint_id == route.app or job.endpoint_id.startswith(route.app + "/")):
            return None
        return job

    def _status_payload(self, job: Job, now: float, logs: list[dict[str, Any]] | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "status": job.state,
            "request_id": job.request_id,
            **self._urls(job.model.app, job.request_id),
        }
        if job.state == "IN_QUEUE":
            payload["queue_position"] = self.board.queue_position(job)
            return payload
        payload["logs"] = logs
        if job.state == "COMPLETED":
            started, completed = job.started_at, job.completed_at
            payload["metrics"] = {"inference_time": round(completed - started, 4)} if started and completed else {}
            error = job.error
            if error is not None:
                payload["error"] = error.message
                payload["error_type"] = error.error_type
        return payload

    def _status(self, route: Route, request: Request) -> Response:
        job = self._lookup(route)
        if job is None:
            return json_response(404, {"detail": "Request not found"})
        with_logs = request.param("logs") in _TRUTHY
        with self.board.cond:
            now = self.clock()
            self.board.advance_locked(now)
            payload = self._status_payload(job, now, logs_of(job, now, self._wall) if with_logs else None)
        status = 200 if payload["status"] == "COMPLETED" else 202
        return json_response(status, payload, [("x-fal-request-id", job.request_id)])

    def _stream(self, route: Route, request: Request) -> Response | EventStream:
        job = self._lookup(route)
        if job is None:
            return json_response(404, {"detail": "Request not found"})
        with_logs = request.param("logs") in _TRUTHY
        headers = (
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("x-fal-request-id", job.request_id),
        )
        return EventStream(lambda: self._status_events(job, with_logs), headers)

    def _status_events(self, job: Job, with_logs: bool) -> Iterator[bytes]:
        board = self.board
        last_key: tuple[Any, ...] | None = None
        sent_logs = 0
        last_sent = self.clock()
        while True:
            with board.cond:
                while True:
                    if board.closed:
                        return
                    now = self.clock()
                    board.advance_locked(now)
                    all_logs = logs_of(job, now, self._wall) if with_logs else []
                    position = board.queue_position(job) if job.state == "IN_QUEUE" else None
                    key = (job.state, position, len(all_logs))
                    if key != last_key:
                        # The JS client appends each event's logs, so send only new lines.
                        payload = self._status_payload(job, now, all_logs[sent_logs:] if with_logs else None)
                        chunk = f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
                        last_key, sent_logs = key, len(all_logs)
                        break
                    if now - last_sent >= KEEPALIVE_S:
                        chunk = b": keep-alive\n\n"
                        break
                    deadlines = [
                        last_sent + KEEPALIVE_S,
                        board.next_event_at(),
                        next_log_at(job, now) if with_logs else None,
                    ]
                    board.cond.wait(max(0.001, min(d for d in deadlines if d is not None) - now))
            yield chunk
            last_sent = self.clock()
            if last_key[0] == "COMPLETED" and chunk.startswith(b"data:"):
                return

    def _result(self, route: Route, request: Request) -> Response:
        job = self._lookup(route)
        if job is None:
            return json_response(404, {"detail": "Request not found"})
        rid = [("x-fal-request-id", job.request_id)]
        with self.board.cond:
            self.board.advance_locked(self.clock())
            if job.state != "COMPLETED":
                return json_response(400, {"detail": "Request is still in progress"}, rid)
            if job.outcome == "cancelled":
                return json_response(499, {"detail": "Request cancelled by the client."}, rid)
            error = job.error
            if error is not None:
                return json_response(error.status, error.body(), rid + error.response_headers())
            return json_response(200, job.output, [*rid, ("x-fal-billable-units", str(job.billable_units))])

    def _cancel(self, route: Route, request: Request) -> Response:
        job = self._lookup(route)
        if job is None:
            return json_response(404, {"status": "NOT_FOUND"})
        outcome = self.board.cancel(job.request_id)
        if outcome == "requested":
            return json_response(202, {"status": "CANCELLATION_REQUESTED"})
        if outcome == "completed":
            return json_response(400, {"status": "ALREADY_COMPLETED"})
        return json_response(404, {"status": "NOT_FOUND"})

    # -- files and storage --------------------------------------------------

    def _file(self, route: Route, request: Request) -> Response:
        found = self.files.get(route.tail)
        if found is None:
            return json_response(404, {"detail": "File not found"})
        content_type, data = found
        return Response(200, data, (("Content-Type", content_type),))

    def _upload_initiate(self, route: Route, request: Request) -> Response:
        try:
            spec = request.json()
        except ValueError:
            spec = None
        if not isinstance(spec, dict):
            return json_response(422, {"detail": "Body must be {file_name, content_type}"})
        name = new_file_name(spec.get("file_name"))
        with self._lock:
            self._upload_names.add(name)
        base = self.base_url()
        return json_response(
            200, {"upload_url": f"{base}/storage/upload/put/{name}", "file_url": f"{base}/files/{name}"}
        )

    def _upload_put(self, route: Route, request: Request) -> Response:
        with self._lock:
            known = route.tail in self._upload_names
        if not known:
            return Response(403, b"<Error><Code>AccessDenied</Code></Error>", (("Content-Type", "application/xml"),))
        self.files.put(route.tail, request.headers.get("content-type", "application/octet-stream"), request.body)
        return Response(200)

    def _upload_token(self, route: Route, request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._cdn_tokens.add(token)
        expires = datetime.now(timezone.utc) + timedelta(hours=1)
        return json_response(
            200,
            {"token": token, "token_type": "Bearer", "base_url": self.base_url(), "expires_at": expires.isoformat()},
        )

    def _upload_cdn(self, request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        with self._lock:
            bearer_ok = authorization.startswith("Bearer ") and authorization[7:] in self._cdn_tokens
        if not (bearer_ok or self._authorized(request)):
            return json_response(401, {"detail": "Unauthorized"})
        name = new_file_name(request.headers.get("x-fal-file-name"))
        self.files.put(name, request.headers.get("content-type", "application/octet-stream"), request.body)
        return json_response(
            200, {"access_url": f"{self.base_url()}/files/{name}", "content_type": request.headers.get("content-type")}
        )

    # -- platform API -------------------------------------------------------

    def _pricing(self, request: Request) -> Response:
        ids = [
            part.strip() for value in request.query.get("endpoint_id", []) for part in value.split(",") if part.strip()
        ]
        if not ids:
            return _platform_error(400, "validation_error", "endpoint_id is required (1 to 50 ids).")
        if len(ids) > MAX_PRICING_IDS:
            return _platform_error(
                400, "validation_error", f"At most {MAX_PRICING_IDS} endpoint_id values are allowed."
            )
        unknown = [endpoint for endpoint in ids if endpoint not in self.models]
        if unknown:
            return _platform_error(404, "not_found", f"Endpoint(s) not found: {', '.join(unknown)}")
        prices = [
            {
                "endpoint_id": endpoint,
                "unit_price": float(self.price_of(self.models[endpoint])),
                "unit": _UNIT_NAMES[self.models[endpoint].unit],
                "currency": "USD",
            }
            for endpoint in ids
        ]
        return json_response(200, {"prices": prices, "next_cursor": None, "has_more": False})


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
