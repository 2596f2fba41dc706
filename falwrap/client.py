"""FalClient: the facade. It wires the parts and reads like the life of a call::

    plan      model, checked arguments, estimate, deadline         (falwrap.plan; no HTTP on bad input)
    account   journal the job before anything is sent; budget     (falwrap.accounting, the journal)
    run       pace, submit, follow, fetch; cancel on the deadline  (falwrap.jobs, falwrap.following)
    record    settle the job, store its result, one call record    (falwrap.accounting, observers)

A job fal accepted is never submitted again, except when fal reports that it
failed with a retryable error; that counts against ``max_retries``. A job whose
call ends without its outcome stays in the journal, charged at its estimate,
until :meth:`FalClient.reconcile` (or the background reconciler) settles it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fal_client
import httpx
import requests

from falwrap._version import __version__ as _version
from falwrap.accounting import Accountant
from falwrap.backends.shared import open_shared_state
from falwrap.batch import BatchProgress, BatchRequest, CallOutcome, run_map
from falwrap.calls import Calls, image_result, video_result
from falwrap.catalog import MODEL_CATALOG, ModelInfo
from falwrap.config import FalConfig
from falwrap.data_uris import is_data_uri
from falwrap.errors import ConfigurationError, FalwrapError
from falwrap.files import download as _download
from falwrap.job_types import Output
from falwrap.jobs import JobRunner
from falwrap.ledger import JournalLedger, Ledger
from falwrap.limiter import Limiter
from falwrap.observers import CallObserver, default_observers
from falwrap.plan import Plan, Planner
from falwrap.platform import PlatformApi
from falwrap.reconcile import Reconciler, ReconcileReport, reconcile_in_background
from falwrap.results import ImageResult, JobHandle, JobStatus, Progress, RunOutput, VideoResult
from falwrap.retry import RetryHook, RetryPolicy
from falwrap.storage import Uploader
from falwrap.transport import build_http_client
from falwrap.webhook_outcomes import JobOutcome, apply_delivery

if TYPE_CHECKING:
    from falwrap.pricing import PriceBook
    from falwrap.webhooks import WebhookVerifier

__all__ = ["FalClient"]

ProgressCallback = Callable[[Progress], None]


class _RoutedSyncClient(fal_client.SyncClient):
    """fal_client's SyncClient on falwrap's shared httpx client (routing; falwrap decides retries).

    SyncClient is a frozen dataclass whose httpx client is a cached property; presetting
    the cache is the supported way to inject one. fal_client's module globals are untouched.
    """

    def __init__(self, key: str, http: httpx.Client) -> None:
        super().__init__(key=key)
        self.__dict__["_client"] = http

    def __repr__(self) -> str:
        return "_RoutedSyncClient(key=<hidden>)"


class FalClient:
    """A synchronous client for fal's queue API. It can be shared between threads.

    Build one per process and reuse it: it holds one connection pool and one
    store (journal, rate limiter, concurrency cap). A context manager: leaving
    it closes what the client opened.

    Args:
        config: Settings; ``None`` reads them with :meth:`FalConfig.from_env`.
        limiter: Rate limiter and concurrency cap (default: from the store ``config.store_url`` names).
        ledger: Where money is kept (default: the store's journal).
        catalog: Models by id (default: :data:`~falwrap.MODEL_CATALOG`).
        on_retry: Hooks told about every retry (for metrics or tracing).
        observers: Told about every call record (default: the INFO log line and Prometheus metrics).

    Raises:
        ConfigurationError: no API key (set ``FAL_KEY`` in the environment or in ``.env``),
            or the store does not answer.
    """

    def __init__(
        self,
        config: FalConfig | None = None,
        *,
        limiter: Limiter | None = None,
        ledger: Ledger | None = None,
        catalog: Mapping[str, ModelInfo] | None = None,
        on_retry: RetryHook | Iterable[RetryHook] | None = None,
        observers: Iterable[CallObserver] | None = None,
    ) -> None:
        self.config = config if config is not None else FalConfig.from_env()
        if not self.config.api_key:
            msg = (
                "No fal API key found. Set FAL_KEY in the environment or in a .env file "
                "(see .env.example); FAL_KEY_ID and FAL_KEY_SECRET together also work."
            )
            raise ConfigurationError(msg, variable="FAL_KEY")
        self.catalog: Mapping[str, ModelInfo] = catalog if catalog is not None else MODEL_CATALOG
        self._hooks = (on_retry,) if callable(on_retry) else tuple(on_retry or ())
        self._state = open_shared_state(self.config, ledger=ledger, limiter=limiter)
        self._http, self._runner, platform = _connect(self.config, self._hooks)
        self._uploader = Uploader(
            self._http, self.config.api_key, exchange=self._runner.exchange, clock=self._runner.clock,
            timeout=self.config.timeouts.image,
        )  # fmt: skip
        self._planner = Planner(self.config, self.catalog, self._model_info, self.upload)
        self._reconciler = Reconciler(
            self.ledger.journal, self._runner, platform, model_info=self._model_info, cost=Accountant.cost,
            now=self.ledger.clock,
        )  # fmt: skip
        self._accounts = Accountant(
            self.ledger, observers=default_observers() if observers is None else observers,
            idempotency_ttl=self.config.idempotency_ttl, before_refusal=self._settle_before_refusal,
        )  # fmt: skip
        self._calls = Calls(
            self.config, self._runner, self._accounts, self.limiter, self._reconciler, self._hooks, self._model_info
        )
        self._startup = (
            None if self.config.store_url.startswith("memory") else reconcile_in_background(self._reconciler)
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def ledger(self) -> JournalLedger:
        """The ledger: daily cost, stats, budget; a view of the journal."""
        return self._state.ledger

    @property
    def limiter(self) -> Limiter:
        """The rate limiter and concurrency cap."""
        return self._state.limiter

    def __repr__(self) -> str:
        target = self.config.base_url or "https://queue.fal.run"
        return f"<FalClient {target} key=<hidden> store={self.config.store_url.split(':', 1)[0]}>"

    def __enter__(self) -> FalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close what the client opened. Jobs still running stay in the journal for reconciliation."""
        self._accounts.heartbeat.close()
        self._http.close()
        self._state.close()
        for name in ("_session", "_prices"):
            opened = self.__dict__.get(name)
            if opened is not None:
                opened.close()

    @cached_property
    def _session(self) -> requests.Session:
        return requests.Session()

    @cached_property
    def _prices(self) -> PriceBook | None:
        if not self.config.live_pricing:
            return None
        from falwrap.pricing import PriceBook

        return PriceBook(self.config, catalog=self.catalog)

    def _model_info(self, model_id: str) -> ModelInfo | None:
        prices = self._prices
        if prices is not None and model_id in self.catalog:
            live: ModelInfo = prices.model_info(model_id)
            return live
        return self.catalog.get(model_id)

    # -- blocking calls --------------------------------------------------------------------------

    def image(self, prompt: str, *, model: str | None = None, size: Any = None, num_images: int = 1,
              seed: int | None = None, budget: Decimal | float | str | None = None, quality: str | None = None,
              urgency: str | None = None, on_progress: ProgressCallback | None = None, timeout: float | None = None,
              idempotency_key: str | None = None, webhook_url: str | None = None,
              **params: Any) -> ImageResult:  # fmt: skip
        """Generate images from a prompt and wait for them.

        ``size`` is a preset (``square_hd``, ``landscape_16_9``, ...), ``"WxH"``, ``{"width", "height"}``
        or ``(W, H)``; ``budget`` (USD per image), ``quality`` and ``urgency`` choose a model when
        ``model`` is ``None``; ``timeout`` defaults to ``Timeouts.image``. ``idempotency_key`` ties
        retries of the same request (any process sharing the store) to one job.

        Raises:
            InvalidInputError: an argument is out of range (nothing was sent).
            BudgetExceededError: today's budget would be exceeded (nothing was sent).
            FalTimeoutError: the deadline passed; the job was cancelled at fal.
            FalApiError: fal refused or failed the job, after any safe retries.
        """
        plan = self._plan(model, "generate", lambda: self._planner.image(
            prompt, model=model, size=size, num_images=num_images, seed=seed, budget=budget, quality=quality,
            urgency=urgency, timeout=timeout, params=params))  # fmt: skip
        output, cost, ms = self._call(plan, on_progress, idempotency_key, webhook_url)
        return image_result(output, plan, cost, ms, self)

    def video(self, prompt: str, *, image: str | Path | None = None, duration: int | str = 5,
              aspect_ratio: str = "16:9", model: str | None = None, budget: Decimal | float | str | None = None,
              quality: str | None = None, urgency: str | None = None, on_progress: ProgressCallback | None = None,
              timeout: float | None = None, idempotency_key: str | None = None, webhook_url: str | None = None,
              **params: Any) -> VideoResult:  # fmt: skip
        """Generate a video from a prompt (animating ``image``, a URL or local file, when given) and wait for it.

        ``timeout`` defaults by clip length (``Timeouts.for_video``). Raises as :meth:`image`.
        """
        plan = self._plan(model, "video", lambda: self._planner.video(
            prompt, image=image, duration=duration, aspect_ratio=aspect_ratio, model=model, budget=budget,
            quality=quality, urgency=urgency, timeout=timeout, params=params))  # fmt: skip
        output, cost, ms = self._call(plan, on_progress, idempotency_key, webhook_url)
        return video_result(output, plan, cost, ms, self)

    def run(self, model_id: str, arguments: Mapping[str, Any], *, operation: str = "generate",
            timeout: float | None = None, on_progress: ProgressCallback | None = None,
            idempotency_key: str | None = None, webhook_url: str | None = None) -> RunOutput:  # fmt: skip
        """Run any fal endpoint through the queue and return its JSON output.

        Catalog models' arguments are checked against their ranges; others pass through as given.
        ``timeout`` defaults by the kind of model (image, upscale, video by clip length). The output
        is a plain ``dict`` (a :class:`~falwrap.results.RunOutput`) whose ``request_id`` and
        ``cost_usd`` attributes name the job and its cost. Raises as :meth:`image`.
        """
        plan = self._plan(model_id, operation, lambda: self._planner.run(
            model_id, arguments, operation=operation, timeout=timeout))  # fmt: skip
        output, cost, _ms = self._call(plan, on_progress, idempotency_key, webhook_url)
        return RunOutput(output.data, request_id=output.request_id, cost_usd=cost)

    def upscale(self, image: str | Path, *, scale: float = 2, model: str | None = None,
                on_progress: ProgressCallback | None = None, timeout: float | None = None,
                idempotency_key: str | None = None, webhook_url: str | None = None,
                **params: Any) -> ImageResult:  # fmt: skip
        """Make a larger copy of an image (a URL or a local file, uploaded first) and wait for it.

        ``scale`` is the factor (1 to 4 for fal's upscalers); ``model`` an upscaler of the catalog
        (default ``fal-ai/clarity-upscaler``); ``timeout`` defaults to ``Timeouts.upscale``.
        Raises as :meth:`image`.
        """
        plan = self._plan(model, "upscale", lambda: self._planner.upscale(
            image, scale=scale, model=model, timeout=timeout, params=params))  # fmt: skip
        output, cost, ms = self._call(plan, on_progress, idempotency_key, webhook_url)
        return image_result(output, plan, cost, ms, self)

    def map(
        self,
        requests: Iterable[BatchRequest | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        idempotency_prefix: str | None = None,
        on_progress: Callable[[BatchProgress], None] | None = None,
    ) -> Iterator[CallOutcome]:
        """Run many calls at the rate and concurrency the limiter allows; yield each outcome as it finishes.

        Each request is a :class:`~falwrap.batch.BatchRequest` or a mapping (``prompt`` and
        parameters, optional ``operation``, ``model``, ``id``, ``key``). An outcome holds the
        result or the typed error: nothing is raised midway. With ``idempotency_prefix``, running
        the same requests again returns finished results from the journal and runs only the rest.

        Raises:
            InvalidInputError: ``concurrency`` or ``idempotency_prefix`` is invalid.
        """
        return run_map(
            self, requests, concurrency=concurrency, idempotency_prefix=idempotency_prefix, on_progress=on_progress
        )

    def _plan(self, model: str | None, operation: str, build: Callable[[], Plan]) -> Plan:
        """Plan a call; a call refused before anything is journaled still leaves its one record."""
        started = time.monotonic()
        try:
            return build()
        except FalwrapError as exc:
            self._accounts.refused(model if isinstance(model, str) else None, operation, started, exc)
            raise

    def _call(
        self, plan: Plan, on_progress: ProgressCallback | None, key: str | None, webhook_url: str | None
    ) -> tuple[Output, Decimal, int]:
        """Account for the call, run its job, record it: the life of every blocking call."""
        ticket = self._calls.open(plan, key, webhook_url)
        try:
            output = self._calls.run(ticket, self._calls.spec(plan, on_progress, ticket.entry.webhook_url))
        except BaseException as exc:
            ticket.fail(exc)
            raise
        cost = ticket.succeed(output)
        return output, cost, int((time.monotonic() - ticket.started) * 1000)

    # -- non-blocking calls for web apps ---------------------------------------------------------

    def submit(self, model_id: str, arguments: Mapping[str, Any], *, operation: str = "generate",
               idempotency_key: str | None = None, webhook_url: str | None = None) -> JobHandle:  # fmt: skip
        """Submit a job and return at once with its handle; follow it with :meth:`status`/:meth:`result`.

        The job is journaled (its estimate charged from acceptance) and a concurrency place is held
        until it is seen finished here. Raises as :meth:`image`.
        """
        plan = self._plan(model_id, operation, lambda: self._planner.run(
            model_id, arguments, operation=operation, timeout=None))  # fmt: skip
        return self._calls.submit(plan, idempotency_key, webhook_url)

    def status(self, handle: JobHandle) -> JobStatus:
        """Ask fal once where the job stands (a job finished in the journal needs no HTTP).

        Raises:
            FalApiError: fal does not know the request, or could not answer.
        """
        return self._calls.status(handle)

    def result(self, handle: JobHandle, *, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the job if needed and return its output; the journal keeps it for later calls.

        A finished job's output comes from the journal without HTTP, even hours later in another
        process. ``timeout`` defaults by the kind of model.

        Raises:
            FalTimeoutError: the job did not finish in time; it was cancelled at fal.
            ModelError: the job failed.
            FalApiError: fal could not be reached or refused.
        """
        seconds = self._planner.default_timeout(handle.model_id) if timeout is None else timeout
        return self._calls.result(handle, seconds)

    def cancel(self, handle: JobHandle) -> bool:
        """Cancel a submitted job at fal: ``True`` if fal took the cancellation, ``False`` if it had completed.

        Raises:
            FalApiError: fal does not know the request, or could not be reached.
        """
        return self._calls.cancel(handle)

    # -- files, money ------------------------------------------------------------------------------

    def upload(self, data: bytes, content_type: str, file_name: str = "upload.bin") -> str:
        """Upload bytes to fal's storage and return their URL (for ``*_url`` arguments).

        Storage v3 first (in parts above 100 MB), the legacy storage when v3 is unavailable
        (see :mod:`falwrap.storage`); retries and fallback within ``Timeouts.image``.

        Raises:
            FalTimeoutError: the upload did not finish in time.
            FalApiError: the upload failed after retries, or fal refused the file.
        """
        return self._uploader.upload(data, content_type, file_name)

    def download(self, url: str, directory: str | Path = ".", *, filename: str | None = None) -> Path:
        """Download one output file atomically into ``directory``; retries within ``Timeouts.image``.

        A ``data:`` URI output (``sync_mode``) is decoded and saved the same way, without HTTP.
        """
        routed = url if is_data_uri(url) else str(self._http._transport.route(httpx.URL(url)))  # type: ignore[attr-defined]
        return _download(
            routed, directory, session=self._session, filename=filename, timeout=self.config.timeouts.image,
            policy=RetryPolicy.from_config(self.config.retry), hooks=self._hooks,
        )  # fmt: skip

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Call statistics from the journal (see :meth:`CostLedger.stats`)."""
        return self.ledger.stats(model)

    def daily_cost(self, day: date | None = None) -> Decimal:
        """Money spent on ``day`` (UTC; default today), exact: every job fal accepted counts."""
        return self.ledger.daily_cost(day)

    # -- webhooks ----------------------------------------------------------------------------------

    @cached_property
    def _verifier(self) -> WebhookVerifier:
        from falwrap.webhooks import WebhookVerifier

        return WebhookVerifier(self.config.webhook_jwks_url)

    def handle_webhook(self, headers: Any, body: bytes) -> JobOutcome:
        """Verify one of fal's webhook deliveries and settle its job in the journal, once per request id.

        Args:
            headers: The request's headers (any mapping; Django's, werkzeug's).
            body: The raw request body.

        Returns:
            What happened: ``new`` (this delivery settled the job), ``duplicate``, ``pending``
            (its job's submission is still being journaled: answer 503 so fal delivers again)
            or ``unknown``.

        Raises:
            WebhookVerificationError: the delivery is not provably from fal (answer 400/401).
        """
        event = self._verifier.verify(headers, body)
        return apply_delivery(
            self.ledger.journal, event, now=self.ledger.clock(), model_info=self._model_info, cost=Accountant.cost
        )

    def _settle_before_refusal(self) -> bool:
        """Reconcile open jobs briefly before refusing a call for budget; ``True`` if money was freed."""
        report = self._reconciler.run(timeout=min(5.0, self.config.timeouts.queue_status))
        return report.cost_change < 0

    def reconcile(self, *, timeout: float = 60.0) -> ReconcileReport:
        """Settle every journaled job whose outcome nobody collected, by asking fal; record true costs.

        A reconciliation the client started in the background (on a store holding orphaned jobs)
        is waited for first, and what it did is part of the report.

        Returns:
            What was settled, what still runs, what fal could not tell yet, and the cost change.
        """
        started = time.monotonic()
        startup, self._startup = self._startup, None
        earlier = startup.wait(timeout) if startup is not None else None
        report = self._reconciler.run(timeout=max(0.0, timeout - (time.monotonic() - started)))
        return report if earlier is None else earlier.then(report)


def _connect(config: FalConfig, hooks: tuple[RetryHook, ...]) -> tuple[httpx.Client, JobRunner, PlatformApi]:
    """The client's one HTTP connection pool, the job runner over it and fal's platform API."""
    # A job uses one connection at a time; the headroom covers uploads, downloads and the
    # status()/cancel() calls of submit-style apps. Threads beyond it wait for the pool.
    http = build_http_client(
        api_key=config.api_key or "", base_url=config.base_url,
        max_connections=max(16, 2 * (config.rate_limit.max_concurrent or 64)),
        user_agent=f"falwrap/{_version} fal-client/{fal_client.__version__}",
        stream_read_timeout=3 * config.timeouts.queue_status,
    )  # fmt: skip
    policy = RetryPolicy.from_config(config.retry)
    platform = PlatformApi(http, policy=policy, per_exchange=config.timeouts.model_list, hooks=hooks)
    runner = JobRunner(
        _RoutedSyncClient(config.api_key or "", http), http, policy=policy, per_exchange=config.timeouts.queue_status,
        poll_interval=config.poll_interval, status_stream=config.status_stream, platform=platform,
        resubmit_ambiguous=config.resubmit_ambiguous, hooks=hooks,
    )  # fmt: skip
    return http, runner, platform
