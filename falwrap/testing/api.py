"""fal's HTTP API as the emulator answers it: shared state, auth, dispatch to each host's routes,
and what a finished job produces and costs."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from falwrap.testing import platform_api, queue_api, run_api, storage_api
from falwrap.testing.behaviour import Behaviour
from falwrap.testing.billing import BillingRecord, Outcome, billable_units
from falwrap.testing.board import JobBoard
from falwrap.testing.counters import RequestCounters
from falwrap.testing.faults import Fault
from falwrap.testing.hosts import Route, classify
from falwrap.testing.jobs import Job, WallClock
from falwrap.testing.messages import EventStream, Request, Response, json_response
from falwrap.testing.models import FakeModel, JobFailure
from falwrap.testing.options import RequestOptions
from falwrap.testing.outputs import FileStore, OutputOptions, build_output, video_seconds
from falwrap.testing.webhook_keys import WebhookSigner

__all__ = ["FalApi", "Route", "classify"]

_NO_USER = {"detail": "No user found for Key ID and Secret"}

#: Actions that check their own credentials: public files, signed upload URLs, CDN tokens.
_OWN_AUTH = frozenset({"file", "upload_put", "upload_cdn", "multipart_create", "multipart_part", "multipart_complete"})

Handler = Callable[["FalApi", Route, Request], "Response | EventStream"]
_HANDLERS: dict[str, Handler] = {**queue_api.handlers, **run_api.handlers, **storage_api.handlers}


@attrs.define
class _PendingFailure:
    failure: JobFailure
    remaining: int
    model: str | None


@attrs.define
class FalApi:
    """The emulated service behind the HTTP server.  Thread-safe.

    Args:
        key: the only API key accepted (as ``Key <key>`` or ``Bearer <key>``).
        models: endpoint id -> model.
        concurrency: runners busy at once, account-wide.
        latency: when set, every model's run time in seconds.
        base_url: callable returning the server's URL (known only once it listens).
        behaviour: which of fal's behaviours to reproduce.
        clock: monotonic clock.
        signer: the webhook signing keys, published at ``/.well-known/jwks.json``.
    """

    key: str = attrs.field(repr=False)
    models: dict[str, FakeModel]
    concurrency: int
    latency: float | None
    base_url: Callable[[], str]
    behaviour: Behaviour = attrs.field(factory=Behaviour)
    clock: Callable[[], float] = time.monotonic
    signer: WebhookSigner = attrs.field(factory=WebhookSigner)
    counters: RequestCounters = attrs.field(factory=RequestCounters, init=False)
    files: FileStore = attrs.field(init=False)
    storage: storage_api.StorageState = attrs.field(factory=storage_api.StorageState, init=False)
    board: JobBoard = attrs.field(init=False)
    billing: list[BillingRecord] = attrs.field(factory=list, init=False)
    wall: WallClock = attrs.field(factory=WallClock, init=False)
    _prices: dict[str, Decimal] = attrs.field(factory=dict, init=False)
    _latencies: dict[str, float] = attrs.field(factory=dict, init=False)
    _pending_failures: deque[_PendingFailure] = attrs.field(factory=deque, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.files = FileStore(self.clock)
        self.board = JobBoard(self.concurrency, self._complete, self.clock, lambda: self.behaviour)

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
            failure: the error their runners fail with.
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

    def new_job(
        self,
        model: FakeModel,
        endpoint_id: str,
        arguments: Mapping[str, Any],
        options: RequestOptions,
        webhook_url: str | None = None,
        sync: bool = False,
    ) -> Job:
        """A new job (not yet on the board) with its scripted failure and cancel semantics.

        Args:
            model: the model it runs.
            endpoint_id: the endpoint it was sent to (may include a sub-path).
            arguments: its input.
            options: its platform headers.
            webhook_url: ``fal_webhook`` of a queue submission.
            sync: a ``fal.run`` call.

        Returns:
            The job.
        """
        return Job(
            request_id=str(uuid.uuid4()),
            model=model,
            endpoint_id=endpoint_id,
            arguments=arguments,
            submitted_at=self.clock(),
            latency_s=self._latency_of(model),
            plan=self._take_failure(model),
            options=options,
            webhook_url=webhook_url,
            sync=sync,
            cancel_mode=model.cancel or self.behaviour.cancel,
        )

    # -- what a finished job produces and costs -----------------------------

    def _output_options(self, job: Job) -> OutputOptions:
        behaviour = self.behaviour
        lifetime = job.options.lifecycle_s
        ended = job.runner_ended_at if job.runner_ended_at is not None else self.clock()
        return OutputOptions(
            base_url=self.base_url(),
            video_overrun_s=behaviour.video_overrun_s,
            data_uris=behaviour.sync_mode_data_uris,
            expires_at=None if lifetime is None else ended + behaviour.real_seconds(lifetime),
        )

    def _render(self, job: Job, files: FileStore) -> tuple[dict[str, Any], Decimal]:
        inference = (job.runner_ended_at or 0.0) - (job.started_at or 0.0)
        options = self._output_options(job)
        output = build_output(job.model, job.arguments, job.request_id, options, files, inference)
        seconds = video_seconds(job.arguments, options.video_overrun_s) if job.model.kind == "video" else None
        return output, billable_units(job.model.unit, output, job.arguments, inference, video_seconds=seconds)

    def _bill(self, job: Job, units: Decimal, outcome: Outcome) -> None:
        price = self.price_of(job.model)
        record = BillingRecord(job.request_id, job.endpoint_id, units, price, units * price, outcome)
        job.billable_units = units
        job.bill = record
        self.billing.append(record)

    def _failure_units(self, job: Job, failure: JobFailure) -> Decimal | None:
        if not self.behaviour.bill_failed_jobs:
            return None
        if failure.billable_units is not None:
            return failure.billable_units
        if failure.status != 422 or failure.is_request_error:
            return None
        try:
            return self._render(job, FileStore(self.clock))[1]
        except (ValueError, TypeError):
            return None

    def _complete(self, job: Job) -> None:
        # Runs under the board's lock when a runner finishes: must stay cheap, which
        # is why image bytes are only rendered when first downloaded.
        if job.outcome == "cancelled":
            # Its model ignored the cancel: what it produced is billed, and shown to nobody.
            try:
                spent = self._render(job, FileStore(self.clock))[1]
            except (ValueError, TypeError):
                return
            self._bill(job, spent, "cancelled")
            return
        failure = job.failure
        if failure is not None:
            charged = self._failure_units(job, failure)
            if charged is not None:
                self._bill(job, charged, "failed")
            job.result_bytes = len(json.dumps(failure.body()))
            return
        try:
            output, units = self._render(job, self.files)
        except (ValueError, TypeError) as exc:
            job.failure = JobFailure("value_error", status=422, retryable=False, detail=str(exc))
            return
        job.output = output
        job.result_bytes = len(json.dumps(output, separators=(",", ":")))
        self._bill(job, units, "ok")

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
            The submit or run path, the job's endpoint id, or None.
        """
        if route.name in ("submit", "run"):
            return route.app
        if route.request_id and route.name != "upload":
            job = self.board.get(route.request_id)
            return job.endpoint_id if job is not None else None
        return None

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the account's key.

        Args:
            request: the request.

        Returns:
            True for ``Authorization: Key <key>`` or ``Bearer <key>``.
        """
        header = request.headers.get("authorization", "")
        return secrets.compare_digest(header, f"Key {self.key}") or secrets.compare_digest(header, f"Bearer {self.key}")

    def stream_output(self, job: Job) -> Response | EventStream:
        """Answer a streaming request for ``job`` (see ``run_api.output_stream``).

        Args:
            job: a registered job of a streaming model.

        Returns:
            The event stream or the job's error.
        """
        return run_api.output_stream(self, job)

    def dispatch(self, route: Route, request: Request, shaping: Fault | None = None) -> Response | EventStream:
        """Answer one request.

        Args:
            route: what ``classify`` made of it.
            request: the request.
            shaping: a ``lag`` or ``omit`` fault for the platform requests API.

        Returns:
            A response or an event stream.
        """
        if route.action in platform_api.handlers:
            if not self.authorized(request):
                return platform_api.platform_error(401, "authorization_error", "Invalid or missing API key.")
            return platform_api.handlers[route.action](self, route, request, shaping)
        if route.action == "jwks":
            return json_response(200, self.signer.jwks(), [("Cache-Control", "public, max-age=3600")])
        handler = _HANDLERS.get(route.action)
        if handler is None:
            return json_response(404, {"detail": "Not Found"})
        if route.action not in _OWN_AUTH and not self.authorized(request):
            return json_response(401, _NO_USER)
        return handler(self, route, request)
