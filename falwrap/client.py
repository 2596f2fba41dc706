"""FalClient: fal's queue API with typed errors, safe retries, deadlines, limits and a cost ledger.

The life of one call (``image``, ``video`` or ``run``)::

    validate arguments locally              no HTTP on bad input
    choose the model                        explicit, or select_model() from budget/quality/urgency
    estimate the cost, reserve it           BudgetExceededError before anything is spent
    hold a concurrency slot                 for the whole life of the job
    submit (rate limited, every attempt)    retried only while fal has not accepted the job
    follow the request id to completion     status stream, else polling; faults resume the same id
    fetch the result, compute actual cost   x-fal-billable-units x unit price
    record exactly one ledger entry         success or failure; settle or release the reservation

On the deadline the job is cancelled at fal and :class:`~falwrap.FalTimeoutError`
is raised. A job fal accepted is never submitted again, except when fal
reports that it failed with a retryable error; that counts against
``max_retries``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import fal_client
import httpx
import requests
from httpx_sse import EventSource, SSEError

from falwrap import retry as _retry
from falwrap._version import __version__ as _version
from falwrap.catalog import MODEL_CATALOG, ModelInfo, TaskRequirements, actual_cost, estimate_cost, select_model
from falwrap.config import FalConfig
from falwrap.errors import (
    RETRYABLE_ERROR_TYPES,
    BackendUnavailableError,
    BudgetExceededError,
    ConfigurationError,
    FalApiError,
    FalConnectionError,
    FalTimeoutError,
    FalwrapError,
    InvalidInputError,
    ModelError,
    NoModelError,
    RateLimitTimeout,
    ServerError,
    error_from_response,
)
from falwrap.files import download as _download
from falwrap.files import image_input
from falwrap.ledger import CallRecord, CostLedger, Ledger, Reservation
from falwrap.limiter import Limiter
from falwrap.results import Image, ImageResult, JobHandle, JobStatus, Progress, Video, VideoResult
from falwrap.retry import RetryDetails, RetryHook, RetryPolicy
from falwrap.transport import DeadlineExceeded, ExchangeError, budget, build_http_client
from falwrap.validation import image_arguments, validate_arguments, video_arguments

if TYPE_CHECKING:
    from falwrap.pricing import PriceBook

__all__ = ["FalClient"]

logger = logging.getLogger("falwrap")

ProgressCallback = Callable[[Progress], None]
_T = TypeVar("_T")

#: Default endpoints when the caller names none and asks for no selection.
DEFAULT_IMAGE_MODEL = "fal-ai/flux/dev"
DEFAULT_TEXT_TO_VIDEO_MODEL = "fal-ai/kling-video/v1/standard/text-to-video"
DEFAULT_IMAGE_TO_VIDEO_MODEL = "fal-ai/kling-video/v1/standard/image-to-video"

#: Ceiling of the polling interval when the status stream is unavailable: slow
#: jobs are polled less often, but a finished job is noticed within this.
MAX_POLL_INTERVAL = 2.0

#: Time allowed to cancel a job after its deadline passed (the promise is
#: that FalTimeoutError comes within deadline + 1 s).
CANCEL_GRACE = 0.9


class _RoutedSyncClient(fal_client.SyncClient):
    """fal_client's SyncClient on falwrap's shared httpx client.

    fal_client builds its own ``httpx.Client`` (with its own retrying backup
    transport) in a cached property; this subclass hands it falwrap's instead,
    which routes ``base_url`` and leaves every retry decision to falwrap.
    fal_client's module globals are left alone.
    """

    def __init__(self, key: str, http: httpx.Client) -> None:
        super().__init__(key=key)
        # SyncClient is a frozen dataclass; cached_property stores in __dict__,
        # so presetting the cache is the supported way to inject the client.
        self.__dict__["_client"] = http

    def __repr__(self) -> str:
        return "_RoutedSyncClient(key=<hidden>)"


@attrs.define
class _Pending:
    """Bookkeeping for a job submitted with :meth:`FalClient.submit` and not yet settled."""

    reservation: Reservation | None
    slot: Any
    started: float
    model: ModelInfo | None
    arguments: Mapping[str, Any]
    operation: str


@attrs.frozen
class _Outcome:
    output: dict[str, Any]
    request_id: str
    billable_units: Decimal | None


class _LeaseKeeper:
    """Renews the leases of shared (Redis) concurrency slots while their jobs run.

    A job can go minutes without a status event (a long video with nobody
    listening to its logs), longer than a lease. One daemon thread per client
    renews every held lease each third of the shortest lease; it runs only
    while some slot is held and exits as soon as none is, so no thread outlives
    the calls it serves.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[int, Any] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, slot: Any) -> None:
        """Keep ``slot`` renewed until :meth:`drop`."""
        with self._lock:
            self._slots[id(slot)] = slot
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="falwrap-lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, slot: Any) -> None:
        """Stop renewing ``slot`` (it was released)."""
        with self._lock:
            self._slots.pop(id(slot), None)
            if not self._slots:
                self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                slots = list(self._slots.values())
                if not slots:
                    self._thread = None
                    self._wake.clear()
                    return
            every = min(float(slot.lease_seconds) for slot in slots) / 3
            if self._wake.wait(every):
                continue
            for slot in slots:
                # renew() never raises: a lease it cannot keep is logged and lapses.
                slot.renew()


class _Deadline(Exception):
    """Internal: the operation's deadline passed while following ``request_id``."""

    def __init__(self, request_id: str | None) -> None:
        super().__init__(request_id)
        self.request_id = request_id


class FalClient:
    """A synchronous client for fal's queue API. It can be shared between threads.

    Build one per process and reuse it: it holds one connection pool, one
    rate limiter and one cost ledger. It is also a context manager that closes
    the pool.

    Args:
        config: Settings; ``None`` reads them with :meth:`FalConfig.from_env`.
        limiter: The rate limiter and concurrency cap (default: built from
            ``config.rate_limit``; shared through Redis when ``redis_url`` is set).
        ledger: Where calls are recorded and budgets enforced (default: an
            in-process :class:`~falwrap.CostLedger`, or a Redis ledger when
            ``redis_url`` is set).
        catalog: Models by id (default: :data:`~falwrap.MODEL_CATALOG`).
        on_retry: Hooks told about every retry (for metrics or tracing).

    Raises:
        ConfigurationError: no API key (set ``FAL_KEY`` in the environment or in ``.env``).
    """

    def __init__(
        self,
        config: FalConfig | None = None,
        *,
        limiter: Limiter | None = None,
        ledger: Ledger | None = None,
        catalog: Mapping[str, ModelInfo] | None = None,
        on_retry: RetryHook | Iterable[RetryHook] | None = None,
    ) -> None:
        self.config = config if config is not None else FalConfig.from_env()
        if not self.config.api_key:
            msg = (
                "No fal API key found. Set FAL_KEY in the environment or in a .env file "
                "(see .env.example); FAL_KEY_ID and FAL_KEY_SECRET together also work."
            )
            raise ConfigurationError(msg, variable="FAL_KEY")
        self.catalog: Mapping[str, ModelInfo] = catalog if catalog is not None else MODEL_CATALOG
        rate = self.config.rate_limit
        namespace = self.config.key_fingerprint
        self.limiter: Limiter = limiter if limiter is not None else Limiter.from_config(rate, namespace)
        self.ledger: Ledger = ledger if ledger is not None else _default_ledger(self.config, namespace)
        self._owns_ledger = ledger is None
        if on_retry is None:
            self._hooks: tuple[RetryHook, ...] = ()
        elif callable(on_retry):
            self._hooks = (on_retry,)
        else:
            self._hooks = tuple(on_retry)
        # A job uses one connection at a time; the headroom covers uploads, downloads and the
        # status()/cancel() calls of submit-style apps. Threads beyond it wait for the pool.
        pool = max(16, 2 * (rate.max_concurrent or 64))
        self._http = build_http_client(
            api_key=self.config.api_key,
            base_url=self.config.base_url,
            max_connections=pool,
            user_agent=f"falwrap/{_version} fal-client/{fal_client.__version__}",
            stream_read_timeout=3 * self.config.timeouts.queue_status,
        )
        self._fal = _RoutedSyncClient(self.config.api_key, self._http)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._stream_supported = self.config.status_stream
        self._leases = _LeaseKeeper()

    # -- lifecycle -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        target = self.config.base_url or "https://queue.fal.run"
        return f"<FalClient {target} key=<hidden> ledger={type(self.ledger).__name__}>"

    def __enter__(self) -> FalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pools. Jobs submitted with :meth:`submit` keep running at fal."""
        self._http.close()
        close_limiter = getattr(self.limiter, "close", None)
        if callable(close_limiter):
            close_limiter()
        if self._owns_ledger:
            redis_client = getattr(self.ledger, "redis", None)
            if redis_client is not None:
                redis_client.close()
        if "_session" in self.__dict__:
            self._session.close()
        if "_prices" in self.__dict__ and self._prices is not None:
            self._prices.close()

    @cached_property
    def _session(self) -> requests.Session:
        return requests.Session()

    @cached_property
    def _prices(self) -> PriceBook | None:
        if not self.config.live_pricing:
            return None
        from falwrap.pricing import PriceBook

        return PriceBook(self.config, catalog=self.catalog)

    # -- high-level calls --------------------------------------------------------------------

    def image(
        self,
        prompt: str,
        *,
        model: str | None = None,
        size: str | Mapping[str, int] | tuple[int, int] | None = None,
        num_images: int = 1,
        seed: int | None = None,
        budget: Decimal | float | str | None = None,
        quality: str | None = None,
        urgency: str | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> ImageResult:
        """Generate images from a prompt and wait for them.

        Args:
            prompt: What to draw.
            model: Endpoint id; when ``None`` it is chosen from ``budget``,
                ``quality`` and ``urgency`` (or ``fal-ai/flux/dev`` without them).
            size: A preset name (``square_hd``, ``landscape_16_9``, ...), ``"WxH"``,
                ``{"width": W, "height": H}`` or ``(W, H)``; multiples of 8.
            num_images: 1 to 4.
            seed: Reproduce an earlier image.
            budget: Most you will pay per image, in USD (for selection).
            quality: ``draft``, ``production`` or ``premium`` (for selection).
            urgency: ``low``, ``normal`` or ``high`` (for selection).
            on_progress: Called with a :class:`~falwrap.Progress` on each change.
            timeout: Deadline in seconds (default ``Timeouts.image``).
            **params: Other model parameters, checked against the model's ranges.

        Returns:
            The images, seed, model, request id, cost and duration.

        Raises:
            InvalidInputError: an argument is out of range (nothing was sent).
            BudgetExceededError: today's budget would be exceeded (nothing was sent).
            FalTimeoutError: the deadline passed; the job was cancelled at fal.
            FalApiError: fal refused or failed the job, after any safe retries.
        """
        with self._recording_precheck_failures(model, "generate"):
            info = self._choose(model, "image", budget, quality, urgency, DEFAULT_IMAGE_MODEL)
            arguments = image_arguments(info, prompt, size=size, num_images=num_images, seed=seed, params=params)
            arguments = self._resolve_local_files(arguments)
        deadline_s = timeout if timeout is not None else self.config.timeouts.image
        outcome, cost, duration_ms = self._call(info.id, info, arguments, "generate", deadline_s, on_progress)
        output = outcome.output
        return ImageResult(
            images=[Image.from_json(item) for item in output.get("images") or ()],
            seed=output.get("seed") if isinstance(output.get("seed"), int) else None,
            has_nsfw_concepts=[bool(x) for x in output.get("has_nsfw_concepts") or ()],
            model=info.id,
            request_id=outcome.request_id,
            cost_usd=cost,
            duration_ms=duration_ms,
            raw=output,
            client=self,
        )

    def video(
        self,
        prompt: str,
        *,
        image: str | Path | None = None,
        duration: int | str = 5,
        aspect_ratio: str = "16:9",
        model: str | None = None,
        budget: Decimal | float | str | None = None,
        quality: str | None = None,
        urgency: str | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> VideoResult:
        """Generate a video from a prompt, optionally animating an image, and wait for it.

        Args:
            prompt: What happens in the video.
            image: A URL or a local image path (uploaded first) to animate.
            duration: 5 or 10 seconds.
            aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
            model: Endpoint id; default Kling v1 standard (image-to-video when
                ``image`` is given, else text-to-video), or chosen from
                ``budget``/``quality``/``urgency``.
            budget: Most you will pay for the video, in USD (for selection).
            quality: ``draft``, ``production`` or ``premium`` (for selection).
            urgency: ``low``, ``normal`` or ``high`` (for selection).
            on_progress: Called with a :class:`~falwrap.Progress` on each change.
            timeout: Deadline in seconds (default by clip length from ``Timeouts``).
            **params: Other model parameters, checked against the model's ranges.

        Returns:
            The video, model, request id, cost and duration.

        Raises:
            InvalidInputError, BudgetExceededError, FalTimeoutError, FalApiError: as for :meth:`image`.
        """
        default = DEFAULT_IMAGE_TO_VIDEO_MODEL if image is not None else DEFAULT_TEXT_TO_VIDEO_MODEL
        with self._recording_precheck_failures(model, "video"):
            info = self._choose(model, "video", budget, quality, urgency, default, needs_image=image is not None)
            arguments = video_arguments(
                info, prompt, image=None if image is None else str(image), duration=duration,
                aspect_ratio=aspect_ratio, params=params,
            )  # fmt: skip
            arguments = self._resolve_local_files(arguments)
        seconds = float(arguments.get("duration", duration))
        deadline_s = timeout if timeout is not None else self.config.timeouts.for_video(seconds)
        outcome, cost, duration_ms = self._call(info.id, info, arguments, "video", deadline_s, on_progress)
        video = outcome.output.get("video")
        if not isinstance(video, Mapping):
            msg = f"fal's answer for {info.id} (request {outcome.request_id}) has no video. Report it to fal."
            raise ServerError(msg, error_code="MALFORMED_RESPONSE", request_id=outcome.request_id)
        return VideoResult(
            video=Video.from_json(video),
            model=info.id,
            request_id=outcome.request_id,
            cost_usd=cost,
            duration_ms=duration_ms,
            raw=outcome.output,
            client=self,
        )

    def run(
        self,
        model_id: str,
        arguments: Mapping[str, Any],
        *,
        operation: str = "generate",
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Run any fal endpoint through the queue and return its JSON output.

        Arguments of catalog models are validated against their ranges; other
        endpoints are passed through as given.

        Args:
            model_id: The endpoint, e.g. ``fal-ai/flux/schnell``.
            arguments: The endpoint's input.
            operation: The name recorded in the ledger.
            timeout: Deadline in seconds (default ``Timeouts.image``).
            on_progress: Called with a :class:`~falwrap.Progress` on each change.

        Raises:
            InvalidInputError, BudgetExceededError, FalTimeoutError, FalApiError: as for :meth:`image`.
        """
        with self._recording_precheck_failures(model_id, operation):
            info, args = self._prepare(model_id, arguments)
        deadline_s = timeout if timeout is not None else self.config.timeouts.image
        outcome, _cost, _ms = self._call(model_id, info, args, operation, deadline_s, on_progress)
        return outcome.output

    # -- non-blocking calls for web apps -----------------------------------------------------

    def submit(self, model_id: str, arguments: Mapping[str, Any], *, operation: str = "generate") -> JobHandle:
        """Submit a job and return at once with its handle; follow it with :meth:`status`/:meth:`result`.

        The estimate is reserved against the budget and a concurrency slot is
        held until :meth:`result` or :meth:`cancel` settles the job in this
        process (or until their expiry, for jobs settled elsewhere).

        Raises:
            InvalidInputError, BudgetExceededError, FalApiError: as for :meth:`image`.
        """
        with self._recording_precheck_failures(model_id, operation):
            info, args = self._prepare(model_id, arguments)
        self._reap_abandoned()
        started = time.monotonic()
        deadline = started + self.config.timeouts.image
        estimate = self._estimate(info, args)
        reservation = slot = None
        try:
            reservation = self._reserve(info, args, model_id, estimate)
            slot = self._acquire_slot(deadline)
            handle, _policy = self._submit(model_id, args, deadline, RetryPolicy.from_config(self.config.retry))
        except BaseException as exc:
            self._release_slot(slot)
            self._record(model_id, operation, started, Decimal(0), exc, None, reservation)
            raise
        with self._lock:
            self._pending[handle.request_id] = _Pending(reservation, slot, started, info, args, operation)
        return JobHandle(
            request_id=handle.request_id,
            model_id=model_id,
            status_url=handle.status_url,
            response_url=handle.response_url,
            cancel_url=handle.cancel_url,
            submitted_at=datetime.now(timezone.utc),
            operation=operation,
            estimate_usd=estimate,
            reservation_id=reservation.id if reservation is not None else None,
        )

    def _reap_abandoned(self) -> None:
        """Settle jobs submitted here whose result nobody fetched within the longest deadline.

        Without this, an app that submits and never asks for the result would
        hold a concurrency slot and a budget reservation for ever.
        """
        horizon = time.monotonic() - max(self.config.timeouts.video_long, self.config.timeouts.image)
        with self._lock:
            stale = [(rid, p) for rid, p in self._pending.items() if p.started < horizon]
        for request_id, pending in stale:
            error = ModelError(
                f"Request {request_id} was submitted but its result was never fetched; stopped tracking it.",
                error_code="ABANDONED",
                request_id=request_id,
            )
            with self._lock:
                if self._pending.pop(request_id, None) is None:
                    continue
            self._release_slot(pending.slot)
            model_id = pending.model.id if pending.model is not None else "(unknown)"
            self._record(
                model_id, pending.operation, pending.started, Decimal(0), error, request_id, pending.reservation
            )

    def status(self, handle: JobHandle) -> JobStatus:
        """Ask fal once where the job stands (retrying transient failures briefly).

        Raises:
            FalApiError: fal does not know the request, or could not answer.
        """
        deadline = time.monotonic() + self.config.timeouts.queue_status * (self.config.retry.max_retries + 1)
        fal_handle = self._fal_handle(handle)
        status = self._with_follow_retries(
            "status", handle.model_id, handle.request_id, deadline, lambda: self._poll_once(fal_handle)
        )
        if status.done:
            # The job no longer runs at fal: free its concurrency slot now rather than
            # when (or if) the app fetches the result.
            with self._lock:
                pending = self._pending.get(handle.request_id)
            if pending is not None:
                self._release_slot(pending.slot)
        return status

    def result(self, handle: JobHandle, *, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the job if needed, then return its output and record the call in the ledger.

        Args:
            handle: From :meth:`submit` (or :meth:`JobHandle.from_dict`).
            timeout: Deadline for waiting, in seconds (default ``Timeouts.image``).

        Raises:
            FalTimeoutError: the job did not finish in time; it was cancelled at fal.
            ModelError: the job failed.
            FalApiError: fal could not be reached or refused.
        """
        with self._lock:
            pending = self._pending.get(handle.request_id)
            already = handle.request_id in self._settled
        started = pending.started if pending else time.monotonic()
        info = pending.model if pending else self.catalog.get(handle.model_id)
        arguments = pending.arguments if pending else {}
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.timeouts.image)
        fal_handle = self._fal_handle(handle)
        try:
            try:
                status = self._follow(fal_handle, handle.model_id, deadline, None, time.monotonic())
                if status.failed:
                    raise self._job_error(fal_handle, handle.model_id, status, deadline, attempts=1)
                outcome = self._fetch_result(fal_handle, handle.model_id, deadline)
                cost = self._actual_cost(info, outcome, arguments)
            except _Deadline:
                self._cancel_quietly(fal_handle, handle.model_id)
                self._raise_timeout(handle.model_id, handle.request_id, timeout or self.config.timeouts.image)
        except BaseException as exc:
            if not already:
                self._finish_pending(handle, pending, info, started, Decimal(0), exc, None)
            raise
        if not already:
            self._finish_pending(handle, pending, info, started, cost, None, outcome.request_id)
        return outcome.output

    def cancel(self, handle: JobHandle) -> bool:
        """Cancel a submitted job at fal.

        Returns:
            ``True`` if fal accepted the cancellation, ``False`` if the job had already completed.

        Raises:
            FalApiError: fal does not know the request, or could not be reached.
        """
        fal_handle = self._fal_handle(handle)
        deadline = time.monotonic() + self.config.timeouts.queue_status * (self.config.retry.max_retries + 1)
        cancelled = self._with_follow_retries(
            "cancel", handle.model_id, handle.request_id, deadline, lambda: self._cancel_once(fal_handle)
        )
        with self._lock:
            pending = self._pending.get(handle.request_id)
        if pending is not None and cancelled:
            error = ModelError(
                f"Request {handle.request_id} was cancelled.", error_code="client_cancelled",
                request_id=handle.request_id,
            )  # fmt: skip
            self._finish_pending(handle, pending, pending.model, pending.started, Decimal(0), error, None)
        return cancelled

    # -- files, stats ------------------------------------------------------------------------

    def upload(self, data: bytes, content_type: str, file_name: str = "upload.bin") -> str:
        """Upload bytes to fal's storage and return their URL (for ``*_url`` arguments).

        Raises:
            FalApiError: the upload failed after retries.
        """
        deadline = time.monotonic() + self.config.timeouts.image

        def attempt() -> str:
            with budget(deadline, None):
                url: str = self._fal.upload(data, content_type, file_name, repository="fal")
            return url

        return self._with_follow_retries("upload", None, None, deadline, attempt)

    def download(self, url: str, directory: str | Path = ".", *, filename: str | None = None) -> Path:
        """Download one output file atomically into ``directory`` and return its path.

        Retries 5xx answers and connection errors within ``Timeouts.image``.
        """
        policy = RetryPolicy.from_config(self.config.retry)
        routed = str(self._http._transport.route(httpx.URL(url)))  # type: ignore[attr-defined]
        return _download(
            routed, directory, session=self._session, filename=filename,
            timeout=self.config.timeouts.image, policy=policy,
        )  # fmt: skip

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Call statistics from the ledger (see :meth:`CostLedger.stats`)."""
        return self.ledger.stats(model)

    def daily_cost(self, day: date | None = None) -> Decimal:
        """Money spent on ``day`` (UTC; default today), exact."""
        return self.ledger.daily_cost(day)

    # -- the call path -------------------------------------------------------------------------

    @contextmanager
    def _recording_precheck_failures(self, model_id: str | None, operation: str) -> Iterator[None]:
        """Record a call refused before any HTTP (bad input, no model fits): every call leaves one record."""
        started = time.monotonic()
        try:
            yield
        except FalwrapError as exc:
            self._record(model_id or "(not chosen)", operation, started, Decimal(0), exc, None)
            raise

    def _choose(
        self,
        model: str | None,
        kind: str,
        budget_usd: Decimal | float | str | None,
        quality: str | None,
        urgency: str | None,
        default: str,
        *,
        needs_image: bool = False,
    ) -> ModelInfo:
        if model is not None:
            info = self._model_info(model)
            if info is None:
                known = ", ".join(sorted(m for m, i in self.catalog.items() if i.kind == kind))
                msg = f"model: {model!r} is not in the catalog. Known {kind} models: {known}. Use run() for others."
                raise InvalidInputError(msg, field="model")
            return info
        if budget_usd is None and quality is None and urgency is None:
            found = self._model_info(default)
            assert found is not None, default
            return found
        requirements = TaskRequirements(
            kind=kind, budget=budget_usd, quality=quality, urgency=urgency or "normal", with_image=needs_image
        )
        chosen = select_model(requirements, self.catalog)
        return self._model_info(chosen.id) or chosen

    def _model_info(self, model_id: str) -> ModelInfo | None:
        prices = self._prices
        if prices is not None and model_id in self.catalog:
            live: ModelInfo = prices.model_info(model_id)
            return live
        return self.catalog.get(model_id)

    def _prepare(self, model_id: str, arguments: Mapping[str, Any]) -> tuple[ModelInfo | None, dict[str, Any]]:
        info = self._model_info(model_id)
        args = validate_arguments(info, model_id, arguments)
        return info, self._resolve_local_files(args)

    def _resolve_local_files(self, arguments: dict[str, Any]) -> dict[str, Any]:
        for key, value in list(arguments.items()):
            if key.endswith("_url") and isinstance(value, (str, Path)):
                arguments[key] = image_input(value, upload=self.upload, field=key)
        return arguments

    def _estimate(self, info: ModelInfo | None, arguments: Mapping[str, Any]) -> Decimal:
        return estimate_cost(info, arguments) if info is not None else Decimal(0)

    def _reserve(
        self,
        info: ModelInfo | None,
        arguments: Mapping[str, Any],
        model_id: str,
        estimate: Decimal | None = None,
    ) -> Reservation | None:
        """Hold the estimate against today's budget; without a budget there is nothing to hold."""
        if self.ledger.daily_budget_usd is None:
            return None
        amount = estimate if estimate is not None else self._estimate(info, arguments)
        return self.ledger.reserve(amount, model_id=model_id)

    def _actual_cost(self, info: ModelInfo | None, outcome: _Outcome, arguments: Mapping[str, Any]) -> Decimal:
        if info is None:
            return Decimal(0)
        return actual_cost(info, billable_units=outcome.billable_units, output=outcome.output, arguments=arguments)

    def _call(
        self,
        model_id: str,
        info: ModelInfo | None,
        arguments: dict[str, Any],
        operation: str,
        timeout: float,
        on_progress: ProgressCallback | None,
    ) -> tuple[_Outcome, Decimal, int]:
        started = time.monotonic()
        deadline = started + timeout
        reservation = None
        outcome: _Outcome | None = None
        cost = Decimal(0)
        error: BaseException | None = None
        try:
            reservation = self._reserve(info, arguments, model_id)
            outcome = self._run_job(model_id, arguments, started, deadline, timeout, on_progress)
            cost = self._actual_cost(info, outcome, arguments)
            return outcome, cost, int((time.monotonic() - started) * 1000)
        except BaseException as exc:
            error = exc
            raise
        finally:
            request_id = outcome.request_id if outcome else getattr(error, "request_id", None)
            self._record(model_id, operation, started, cost, error, request_id, reservation)

    def _run_job(
        self,
        model_id: str,
        arguments: dict[str, Any],
        started: float,
        deadline: float,
        timeout: float,
        on_progress: ProgressCallback | None,
    ) -> _Outcome:
        policy = RetryPolicy.from_config(self.config.retry)
        while True:
            slot = self._acquire_slot(deadline)
            try:
                handle, policy = self._submit(model_id, arguments, deadline, policy)
                try:
                    status = self._follow(handle, model_id, deadline, on_progress, started)
                    if not status.failed:
                        return self._fetch_result(handle, model_id, deadline)
                    error = self._job_error(handle, model_id, status, deadline, policy.attempts)
                except _Deadline:
                    self._cancel_quietly(handle, model_id)
                    self._raise_timeout(model_id, handle.request_id, timeout)
                except BaseException:
                    # Whatever ends the call early (an error after retries, a failing
                    # progress callback, KeyboardInterrupt): stop paying for the job.
                    self._cancel_quietly(handle, model_id)
                    raise
            finally:
                self._release_slot(slot)
            # The job ran and failed. Resubmitting is the only resubmission allowed,
            # and only when fal says a new attempt can succeed.
            delay = policy.delay_for(error, deadline - time.monotonic())
            if delay is None:
                raise error
            self._notify("resubmit", policy.attempts + 1, delay, error, model_id)
            policy = policy.increment(error)
            _retry.sleep(delay)

    def _acquire_slot(self, deadline: float) -> Any:
        concurrency = self.limiter.concurrency
        if concurrency is None:
            return None
        slot = concurrency.acquire(timeout=max(0.0, deadline - time.monotonic()))
        if getattr(slot, "lease_seconds", None) is not None:
            self._leases.hold(slot)
        return slot

    def _release_slot(self, slot: Any) -> None:
        if slot is not None:
            self._leases.drop(slot)
            slot.release()

    def _submit(
        self, model_id: str, arguments: Mapping[str, Any], deadline: float, policy: RetryPolicy
    ) -> tuple[fal_client.SyncRequestHandle, RetryPolicy]:
        per_exchange = self.config.timeouts.queue_status
        while True:
            remaining = deadline - time.monotonic()
            # Every attempt, retries included, passes the limiter: a retry storm is still paced.
            self.limiter.rate.acquire(timeout=max(0.0, remaining))
            try:
                with budget(deadline, per_exchange):
                    handle = self._fal.submit(model_id, dict(arguments))
                logger.debug("[falwrap] submitted %s as request %s", model_id, handle.request_id)
                return handle, policy
            except ExchangeError as exc:
                error = self._exchange_error(exc, model_id, None, policy.attempts)
                cause = exc
            except DeadlineExceeded:
                self._raise_timeout(model_id, None, None)
            except (ValueError, KeyError, TypeError) as exc:
                # A 2xx whose body is not the queue's answer. The job may exist, so it is not resubmitted.
                msg = (
                    f"fal accepted the submission to {model_id} but its answer could not be read ({exc!r}). "
                    "The job may be running; it was not resubmitted to avoid paying twice."
                )
                raise ServerError(msg, error_code="MALFORMED_RESPONSE", attempts=policy.attempts) from exc
            delay = policy.delay_for(error, deadline - time.monotonic())
            if delay is None:
                if error.retryable and not policy.exhausted:
                    self._raise_timeout(model_id, None, None, cause=error)
                raise error from cause
            self._notify("submit", policy.attempts + 1, delay, error, model_id)
            policy = policy.increment(error)
            _retry.sleep(delay)

    def _follow(
        self,
        handle: fal_client.SyncRequestHandle,
        model_id: str,
        deadline: float,
        on_progress: ProgressCallback | None,
        started: float,
    ) -> JobStatus:
        """Follow the job until it completes; return its final status."""
        seen: set[tuple[Any, ...]] = set()

        def emit(status: JobStatus) -> None:
            if on_progress is None:
                return
            new = []
            for line in status.logs:
                key = (line.get("timestamp"), line.get("message"), line.get("level"))
                if key not in seen:
                    seen.add(key)
                    new.append(line)
            on_progress(
                Progress(
                    request_id=handle.request_id,
                    status=status.status,
                    queue_position=status.queue_position,
                    new_logs=new,
                    elapsed_s=time.monotonic() - started,
                    model_id=model_id,
                )
            )

        # Logs are only worth their bytes (and, on the stream, their extra events) to a listener.
        logs = on_progress is not None
        if self._stream_supported:
            final = self._follow_stream(handle, model_id, deadline, emit, logs)
            if final is not None:
                return final
        return self._follow_polling(handle, model_id, deadline, emit, logs)

    def _follow_stream(
        self,
        handle: fal_client.SyncRequestHandle,
        model_id: str,
        deadline: float,
        emit: Callable[[JobStatus], None],
        logs: bool,
    ) -> JobStatus | None:
        """Follow the job on fal's status stream; ``None`` means: fall back to polling."""
        request = self._http.build_request(
            "GET",
            f"{handle.status_url}/stream",
            params={"logs": "1" if logs else "0"},
            extensions={"falwrap_stream": True},
        )
        try:
            with budget(deadline, None):
                response = self._http.send(request, stream=True)
                try:
                    events = EventSource(response).iter_sse()
                    for event in events:
                        if not event.data:
                            continue
                        status = _parse_status(handle.request_id, json.loads(event.data))
                        emit(status)
                        if status.done:
                            _drain(events, handle.request_id)
                            return status
                finally:
                    response.close()
        except DeadlineExceeded:
            raise _Deadline(handle.request_id) from None
        except ExchangeError as exc:
            if exc.response is not None and exc.response.status_code in {404, 405, 501}:
                # This server has no status stream (an older gateway, a proxy): stop asking.
                self._stream_supported = False
            if time.monotonic() >= deadline:
                raise _Deadline(handle.request_id) from None
            logger.debug("[falwrap] status stream for %s failed (%s); polling instead", handle.request_id, exc)
        except (SSEError, ValueError, KeyError, httpx.HTTPError) as exc:
            logger.debug("[falwrap] status stream for %s broke (%r); polling instead", handle.request_id, exc)
        if time.monotonic() >= deadline:
            raise _Deadline(handle.request_id)
        return None

    def _follow_polling(
        self,
        handle: fal_client.SyncRequestHandle,
        model_id: str,
        deadline: float,
        emit: Callable[[JobStatus], None],
        logs: bool = True,
    ) -> JobStatus:
        since = time.monotonic()
        while True:
            status = self._with_follow_retries(
                "status", model_id, handle.request_id, deadline, lambda: self._poll_once(handle, logs)
            )
            emit(status)
            if status.done:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline(handle.request_id)
            # Poll often at first, then about ten times over the job's age so far: a finished
            # job is noticed within ~10% of its run time, and long jobs cost few requests.
            age = time.monotonic() - since
            interval = min(max(self.config.poll_interval, age / 10), MAX_POLL_INTERVAL)
            time.sleep(min(interval, remaining))

    def _poll_once(self, handle: fal_client.SyncRequestHandle, logs: bool = True) -> JobStatus:
        status: fal_client.Status = handle.status(with_logs=logs)
        return _from_fal_status(handle.request_id, status)

    def _cancel_once(self, handle: fal_client.SyncRequestHandle) -> bool:
        try:
            handle.cancel()
        except ExchangeError as exc:
            if exc.response is not None and exc.response.status_code == 400:
                return False
            raise
        return True

    def _with_follow_retries(
        self,
        phase: str,
        model_id: str | None,
        request_id: str | None,
        deadline: float,
        exchange: Callable[[], _T],
        *,
        job_error_type: str | None = None,
    ) -> _T:
        """Run one exchange about an accepted job; transient failures retry the same exchange.

        Nothing here submits: a job that fal accepted is never submitted again.
        ``job_error_type`` (``""`` when unknown) means the exchange reads the
        result of a job whose status said it failed: an answer carrying that
        error is the job's outcome, not a fault to retry; any other failure
        (a gateway's 503, a reset) is retried like every other exchange.
        """
        policy = RetryPolicy.from_config(self.config.retry)
        per_exchange = self.config.timeouts.queue_status
        while True:
            try:
                with budget(deadline, per_exchange):
                    return exchange()
            except DeadlineExceeded:
                raise _Deadline(request_id) from None
            except ExchangeError as exc:
                job_failed = job_error_type is not None
                error = self._exchange_error(exc, model_id, request_id, policy.attempts, job_failed=job_failed)
                if isinstance(error, ModelError) and job_error_type in {"", error.error_code}:
                    raise error from exc
                cause: BaseException = exc
            except (ValueError, KeyError, TypeError) as exc:
                msg = f"fal's {phase} answer for request {request_id} could not be read ({exc!r})."
                error = ServerError(msg, error_code="MALFORMED_RESPONSE", request_id=request_id, retryable=True)
                cause = exc
            delay = policy.delay_for(error, deadline - time.monotonic())
            if delay is None:
                if error.retryable and not policy.exhausted:
                    raise _Deadline(request_id) from cause
                error.attempts = policy.attempts
                raise error from cause
            self._notify(phase, policy.attempts + 1, delay, error, model_id, request_id)
            policy = policy.increment(error)
            _retry.sleep(delay)

    def _fetch_result(
        self,
        handle: fal_client.SyncRequestHandle,
        model_id: str,
        deadline: float,
        *,
        job_error_type: str | None = None,
    ) -> _Outcome:
        # fal_client's handle.get() re-polls the status first and drops the response
        # headers; the result URL is fetched directly to read x-fal-billable-units.
        def exchange() -> _Outcome:
            response = self._http.get(handle.response_url)
            units = response.headers.get("x-fal-billable-units")
            data = response.json()
            if not isinstance(data, dict):
                msg = f"expected a JSON object, got {type(data).__name__}"
                raise TypeError(msg)
            return _Outcome(data, handle.request_id, _decimal_or_none(units))

        return self._with_follow_retries(
            "result", model_id, handle.request_id, deadline, exchange, job_error_type=job_error_type
        )

    def _job_error(
        self,
        handle: fal_client.SyncRequestHandle,
        model_id: str,
        status: JobStatus,
        deadline: float,
        attempts: int,
    ) -> FalApiError:
        """The typed error of a job that completed with an error, read from its result.

        ``attempts`` (submissions made for the call so far) is set on the error.
        """
        try:
            self._fetch_result(handle, model_id, deadline, job_error_type=status.error_type or "")
        except ModelError as exc:
            exc.attempts = attempts
            return exc
        except FalApiError as exc:
            if exc.request_id == handle.request_id and exc.status_code not in {None, 401, 403, 404, 429}:
                exc.attempts = attempts
                return exc
            raise
        # The result answered 2xx although the status said the job failed: trust the status.
        error_type = status.error_type or "MODEL_ERROR"
        msg = f"The job (request {handle.request_id}) failed calling {model_id}: {status.error or error_type}."
        retryable = error_type in RETRYABLE_ERROR_TYPES
        return ModelError(
            msg, error_code=error_type, request_id=handle.request_id, retryable=retryable, attempts=attempts
        )

    def _exchange_error(
        self,
        exc: ExchangeError,
        model_id: str | None,
        request_id: str | None,
        attempts: int,
        *,
        job_failed: bool = False,
    ) -> FalApiError:
        response = exc.response
        if response is not None:
            return error_from_response(
                response.status_code,
                dict(response.headers),
                response.content,
                request_id=request_id,
                job_failed=job_failed,
                model_id=model_id,
                attempts=attempts,
                queue_phase=request_id is not None,
            )
        what = f" calling {model_id}" if model_id else ""
        rid = f" (request {request_id})" if request_id else ""
        if exc.timed_out:
            msg = f"fal did not answer in time{what}{rid}. It may be overloaded; try again shortly."
            return FalConnectionError(msg, error_code="TIMEOUT", request_id=request_id, retryable=True)
        msg = (
            f"Could not reach fal{what}{rid}: {type(exc.cause).__name__}. "
            "Check the network (and FAL_BASE_URL if set), then try again."
        )
        return FalConnectionError(msg, request_id=request_id, retryable=True, attempts=attempts)

    def _cancel_quietly(self, handle: fal_client.SyncRequestHandle, model_id: str) -> None:
        """Best-effort cancel within a short grace period; failures are logged, never raised."""
        grace = time.monotonic() + CANCEL_GRACE
        try:
            with budget(grace, CANCEL_GRACE):
                cancelled = self._cancel_once(handle)
            logger.info(
                "[falwrap] %s request %s at fal (%s)",
                "cancelled" if cancelled else "could not cancel finished",
                handle.request_id,
                model_id,
            )
        except (ExchangeError, DeadlineExceeded, httpx.HTTPError) as exc:
            logger.warning("[falwrap] could not cancel request %s at fal: %s", handle.request_id, exc)

    def _raise_timeout(
        self, model_id: str, request_id: str | None, timeout: float | None, *, cause: BaseException | None = None
    ) -> NoReturn:
        limit = f" within {timeout:g} s" if timeout else " before its deadline"
        where = f" (request {request_id}, cancelled at fal)" if request_id else " (nothing was left running at fal)"
        msg = (
            f"The call to {model_id} did not finish{limit}{where}. "
            "Pass a larger timeout= or raise the FAL_TIMEOUT_* setting."
        )
        raise FalTimeoutError(msg, request_id=request_id) from cause

    def _notify(
        self,
        phase: str,
        attempt: int,
        delay: float,
        error: FalApiError,
        model_id: str | None,
        request_id: str | None = None,
    ) -> None:
        details = RetryDetails(phase, attempt, delay, error, request_id or error.request_id, model_id)
        _retry.notify(self._hooks, details)

    def _fal_handle(self, handle: JobHandle) -> fal_client.SyncRequestHandle:
        return fal_client.SyncRequestHandle(
            request_id=handle.request_id,
            response_url=handle.response_url,
            status_url=handle.status_url,
            cancel_url=handle.cancel_url,
            client=self._http,
        )

    # -- ledger bookkeeping ------------------------------------------------------------------

    def _finish_pending(
        self,
        handle: JobHandle,
        pending: _Pending | None,
        info: ModelInfo | None,
        started: float,
        cost: Decimal,
        error: BaseException | None,
        request_id: str | None,
    ) -> None:
        with self._lock:
            if self._pending.pop(handle.request_id, None) is None and pending is not None:
                return  # another thread settled it first
            self._settled[handle.request_id] = None
            while len(self._settled) > 10_000:
                self._settled.popitem(last=False)
        if pending is not None:
            self._release_slot(pending.slot)
            reservation = pending.reservation
        elif handle.reservation_id is not None:
            # Submitted by another process (or before a restart): end its hold here.
            reservation = self.ledger.adopt(handle.reservation_id, handle.estimate_usd, model_id=handle.model_id)
        else:
            reservation = None
        rid = request_id or handle.request_id
        self._record(handle.model_id, handle.operation, started, cost, error, rid, reservation)

    def _now(self) -> datetime:
        # The ledger's clock, when it has one, so a record lands on the day its reservation was checked.
        clock = getattr(self.ledger, "clock", None)
        return clock() if callable(clock) else datetime.now(timezone.utc)

    def _record(
        self,
        model_id: str,
        operation: str,
        started: float,
        cost: Decimal,
        error: BaseException | None,
        request_id: str | None,
        reservation: Reservation | None = None,
    ) -> None:
        """Store the one record of a call; its reservation's hold ends in the same step."""
        error_code = None
        if error is not None:
            error_code = _error_code(error)
        record = CallRecord(
            timestamp=self._now(),
            model_id=model_id,
            operation=operation,
            duration_ms=int((time.monotonic() - started) * 1000),
            cost_usd=cost if error is None else Decimal(0),
            success=error is None,
            error_code=error_code,
            request_id=request_id,
        )
        try:
            self.ledger.record(record, reservation=reservation)
        except BackendUnavailableError:
            # The call is over: its result (paid for) or its own error is what the caller
            # must get, not a bookkeeping failure. The record goes to the log in full so
            # it can be reconciled, and the reservation lapses by its TTL.
            logger.exception("[falwrap] could not store the call record %s", record.to_dict())


def _drain(events: Iterator[Any], request_id: str) -> None:
    """Read a status stream to its end after COMPLETED, so its connection goes back to the pool.

    fal closes the stream right after COMPLETED; closing it first would throw the
    connection (and, against fal, its TLS session) away on every job. A failure
    here only costs that reuse, never the result.
    """
    try:
        for _ in events:
            pass
    except (httpx.HTTPError, ExchangeError, SSEError) as exc:
        logger.debug("[falwrap] status stream for %s ended uncleanly (%r)", request_id, exc)


#: The ledger's error code for falwrap's own (non-API) errors; subclasses match their base.
_LOCAL_ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (BudgetExceededError, "BUDGET_EXCEEDED"),
    (InvalidInputError, "INVALID_INPUT"),
    (NoModelError, "NO_MODEL"),
    (RateLimitTimeout, "RATE_LIMIT_TIMEOUT"),
    (BackendUnavailableError, "BACKEND_UNAVAILABLE"),
    (ConfigurationError, "CONFIGURATION"),
    (KeyboardInterrupt, "INTERRUPTED"),
)


def _error_code(error: BaseException) -> str:
    if isinstance(error, FalApiError):
        return error.error_code
    for cls, code in _LOCAL_ERROR_CODES:
        if isinstance(error, cls):
            return code
    return type(error).__name__


def _decimal_or_none(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        units = Decimal(value.strip())
    except ArithmeticError:
        return None
    return units if units.is_finite() and units >= 0 else None


def _parse_status(request_id: str, data: Mapping[str, Any]) -> JobStatus:
    status = str(data["status"])
    metrics = data.get("metrics") or {}
    return JobStatus(
        request_id=request_id,
        status=status,
        queue_position=data.get("queue_position"),
        logs=tuple(data.get("logs") or ()),
        error=data.get("error"),
        error_type=data.get("error_type"),
        inference_time=metrics.get("inference_time") if isinstance(metrics, Mapping) else None,
    )


def _from_fal_status(request_id: str, status: fal_client.Status) -> JobStatus:
    if isinstance(status, fal_client.Queued):
        return JobStatus(request_id, "IN_QUEUE", queue_position=status.position)
    if isinstance(status, fal_client.InProgress):
        return JobStatus(request_id, "IN_PROGRESS", logs=tuple(status.logs or ()))
    if isinstance(status, fal_client.Completed):
        metrics = status.metrics or {}
        return JobStatus(
            request_id,
            "COMPLETED",
            logs=tuple(status.logs or ()),
            error=status.error,
            error_type=status.error_type,
            inference_time=metrics.get("inference_time"),
        )
    msg = f"unknown status {status!r}"
    raise ValueError(msg)


def _default_ledger(config: FalConfig, namespace: str) -> Ledger:
    if config.rate_limit.redis_url:
        from falwrap.backends.redis import RedisLedger, connect

        return RedisLedger(
            connect(config.rate_limit.redis_url), f"falwrap:{namespace}", daily_budget_usd=config.daily_budget_usd
        )
    return CostLedger(daily_budget_usd=config.daily_budget_usd)
