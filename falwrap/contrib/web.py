"""Framework-neutral pieces of the web integrations: error responses and the submit/poll pattern.

A request thread should not wait five minutes for a video. The pattern::

    POST /jobs            handle = client.submit(model, arguments); store.save(handle)
                          -> 202 {"request_id": ..., "status": "IN_QUEUE", ...}
    GET  /jobs/<id>       report = job_report(client, store, id)
                          -> 202 while queued or running, 200 with the result (or the job's error)

The browser (or a worker) polls the second URL. Handles stay on the server,
in a :class:`JobStore`: a handle holds the URLs the server will call *with the
fal key*, so one supplied by a client must never be trusted. With
``FALWRAP_REDIS_URL`` the store lives in Redis and any worker can answer a poll.

:func:`error_response` turns every :class:`~falwrap.FalwrapError` into an HTTP
status, headers and a JSON body carrying the friendly message; a spent daily
budget is a 429 with ``Retry-After`` set to the next 00:00 UTC.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

import attrs

from falwrap.errors import (
    BudgetExceededError,
    FalApiError,
    FalTimeoutError,
    FalwrapError,
    ModelError,
    RateLimitTimeout,
)
from falwrap.results import JobHandle

if TYPE_CHECKING:
    from falwrap.backends.base import Store
    from falwrap.backends.redis_store import RedisStore
    from falwrap.client import FalClient
    from falwrap.config import FalConfig

__all__ = [
    "DEFAULT_JOB_TTL",
    "ErrorResponse",
    "JobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "accepted_body",
    "error_response",
    "job_report",
    "job_store_for",
    "jsonable",
    "valid_request_id",
]

#: Seconds a job handle (and its finished report) is kept: a day covers any
#: generation and the user coming back to the page, without growing forever.
DEFAULT_JOB_TTL = 86_400

#: fal's request ids are UUIDs; anything else in a URL is refused before any lookup.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def jsonable(value: Any) -> Any:
    """``value`` with Decimals, datetimes and tuples made JSON-friendly, recursively.

    Money stays exact: a ``Decimal`` becomes its string (``"0.003000"``), never a float.

    Args:
        value: Dicts, lists, tuples, scalars, ``Decimal``, ``datetime``/``date``.

    Returns:
        Something ``json.dumps`` accepts.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- errors -> HTTP --------------------------------------------------------------------------------


@attrs.frozen
class ErrorResponse:
    """What to send for an error: status, extra headers and a JSON body.

    Args:
        status: The HTTP status code.
        body: ``{"error": {"type", "code", "message", "request_id"}}``; ``message``
            is the error's friendly text.
        headers: Extra headers (``Retry-After`` where waiting helps).
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = attrs.field(factory=dict)


def _seconds_to_utc_midnight(now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    return max(1, math.ceil((midnight - now).total_seconds()))


def error_response(exc: FalwrapError, *, now: datetime | None = None) -> ErrorResponse:
    """Map a falwrap error to an HTTP answer carrying its friendly message.

    The status is the error class's ``http_status`` and the body's ``code``
    the error's ``error_code`` (see :mod:`falwrap.errors` for the table):

    ==============================================  ======  ===========================
    error                                           status  notes
    ==============================================  ======  ===========================
    BudgetExceededError                             429     Retry-After: next 00:00 UTC
    InvalidInputError, NoModelError                 400     nothing was sent to fal
    InvalidRequestError (fal refused the input)     422     ``details`` included
    PaymentRequiredError (fal account balance)      402
    NotFoundError (unknown model or request)        404
    RateLimitTimeout, RateLimitError                503     Retry-After when known
    BackendUnavailableError                         503     the shared store is down
    FalTimeoutError                                 504     the job was cancelled at fal
    ModelError, ServerError, FalConnectionError     502
    ConfigurationError, AuthenticationError         500     the server's setup is wrong
    ==============================================  ======  ===========================

    Args:
        exc: The error.
        now: The current time (for ``Retry-After`` of a budget error; tests).

    Returns:
        The :class:`ErrorResponse`. Its body never contains the API key (no
        falwrap message does).
    """
    error: dict[str, Any] = {"type": type(exc).__name__, "code": exc.error_code, "message": str(exc)}
    headers: dict[str, str] = {}
    if isinstance(exc, FalApiError):
        error["request_id"] = exc.request_id
        if exc.details:
            error["details"] = jsonable(exc.details)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, BudgetExceededError):
        error["budget_usd"] = str(exc.budget)
        error["spent_usd"] = str(exc.spent)
        headers["Retry-After"] = str(_seconds_to_utc_midnight(now))
    elif isinstance(exc, RateLimitTimeout) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    return ErrorResponse(type(exc).http_status, {"error": error}, headers)


# --- job handles kept on the server ------------------------------------------------------------------


def valid_request_id(request_id: str) -> bool:
    """Whether ``request_id`` looks like one of fal's (refuse the rest before any lookup).

    Args:
        request_id: From the URL.

    Returns:
        ``True`` for 1-128 letters, digits, ``-`` and ``_``.
    """
    return bool(_REQUEST_ID.match(request_id))


@runtime_checkable
class JobStore(Protocol):
    """Where the web app keeps the handles of submitted jobs, and their finished reports.

    Implementations must be thread-safe.
    """

    def save(self, handle: JobHandle) -> None:
        """Keep ``handle`` under its request id."""

    def load(self, request_id: str) -> JobHandle | None:
        """The handle saved under ``request_id``, or ``None``."""

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Keep the final report of a job, so later polls do not ask fal again."""

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The final report kept for ``request_id``, or ``None``."""


@attrs.define
class MemoryJobStore:
    """An in-process :class:`JobStore`: fine for one process; with several workers use Redis.

    Thread-safe. Holds at most ``max_jobs`` jobs, dropping the oldest.

    Args:
        max_jobs: How many jobs to remember.
    """

    max_jobs: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    _jobs: OrderedDict[str, tuple[JobHandle, dict[str, Any] | None]] = attrs.field(
        factory=OrderedDict, init=False, repr=False
    )
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def save(self, handle: JobHandle) -> None:
        """Keep ``handle`` under its request id.

        Args:
            handle: From ``client.submit``.
        """
        with self._lock:
            self._jobs[handle.request_id] = (handle, None)
            while len(self._jobs) > self.max_jobs:
                self._jobs.popitem(last=False)

    def load(self, request_id: str) -> JobHandle | None:
        """The handle saved under ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            The handle, or ``None`` when unknown (or forgotten).
        """
        with self._lock:
            entry = self._jobs.get(request_id)
        return entry[0] if entry else None

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Keep the final report of a known job.

        Args:
            request_id: fal's request id.
            report: The JSON-ready report.
        """
        with self._lock:
            entry = self._jobs.get(request_id)
            if entry is not None:
                self._jobs[request_id] = (entry[0], dict(report))

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The final report of ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            A copy of the report, or ``None`` while the job is not finished here.
        """
        with self._lock:
            entry = self._jobs.get(request_id)
        return dict(entry[1]) if entry and entry[1] is not None else None


@attrs.define
class RedisJobStore:
    """A :class:`JobStore` in Redis, so any worker process or host can answer a poll.

    Thread-safe (redis-py clients are). Entries expire after ``ttl`` seconds.

    Args:
        redis: A redis-py client.
        prefix: Key prefix, e.g. ``falwrap:<key fingerprint>:jobs``.
        ttl: Seconds to keep a job.
    """

    redis: Any = attrs.field(repr=False)
    prefix: str
    ttl: int = attrs.field(default=DEFAULT_JOB_TTL, validator=attrs.validators.gt(0))

    def save(self, handle: JobHandle) -> None:
        """Keep ``handle`` under its request id.

        Args:
            handle: From ``client.submit``.

        Raises:
            redis.RedisError: Redis failed.
        """
        self.redis.set(f"{self.prefix}:{handle.request_id}", json.dumps(handle.to_dict()), ex=self.ttl)

    def load(self, request_id: str) -> JobHandle | None:
        """The handle saved under ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            The handle, or ``None`` when unknown or expired.

        Raises:
            redis.RedisError: Redis failed.
        """
        raw = self.redis.get(f"{self.prefix}:{request_id}")
        return JobHandle.from_dict(json.loads(raw)) if raw else None

    def finish(self, request_id: str, report: Mapping[str, Any]) -> None:
        """Keep the final report of a job.

        Args:
            request_id: fal's request id.
            report: The JSON-ready report.

        Raises:
            redis.RedisError: Redis failed.
        """
        self.redis.set(f"{self.prefix}:{request_id}:done", json.dumps(jsonable(report)), ex=self.ttl)

    def finished(self, request_id: str) -> dict[str, Any] | None:
        """The final report of ``request_id``.

        Args:
            request_id: fal's request id.

        Returns:
            The report, or ``None`` while the job is not finished.

        Raises:
            redis.RedisError: Redis failed.
        """
        raw = self.redis.get(f"{self.prefix}:{request_id}:done")
        if not raw:
            return None
        report: dict[str, Any] = json.loads(raw)
        return report


def job_store_for(config: FalConfig, *, store: Store | None = None) -> JobStore:
    """The store a config implies: Redis when shared state lives in Redis, else in-process.

    Args:
        config: The client's config.
        store: The shared state the client opened. A Redis store lends its client,
            so the job store adds no connection pool; without one, a Redis client is
            opened from ``FALWRAP_REDIS_URL`` when it is set.

    Returns:
        A :class:`RedisJobStore` under ``falwrap:<namespace>:jobs``, or a :class:`MemoryJobStore`.

    Raises:
        ConfigurationError: Redis does not answer.
    """
    if store is not None and _is_redis(store):
        return RedisJobStore(store.client, store.key("jobs"))
    url = config.rate_limit.redis_url
    if not url:
        return MemoryJobStore()
    from falwrap.backends.redis import connect

    return RedisJobStore(connect(url), f"falwrap:{config.key_fingerprint}:jobs")


def _is_redis(store: Store) -> TypeGuard[RedisStore]:
    try:
        from falwrap.backends.redis_store import RedisStore
    except ImportError:  # without redis-py no store is a Redis one
        return False
    return isinstance(store, RedisStore)


def accepted_body(handle: JobHandle, status_path: str) -> dict[str, Any]:
    """The JSON body of a 202 answer to a submission.

    Args:
        handle: From ``client.submit``.
        status_path: The app's URL to poll (e.g. ``/jobs/<request_id>``).

    Returns:
        ``request_id``, ``model_id``, ``status`` (``IN_QUEUE``), ``submitted_at``,
        ``estimate_usd`` (string) and ``status_url``. The fal URLs stay on the server.
    """
    return {
        "request_id": handle.request_id,
        "model_id": handle.model_id,
        "status": "IN_QUEUE",
        "submitted_at": handle.submitted_at.isoformat(),
        "estimate_usd": str(handle.estimate_usd),
        "status_url": status_path,
    }


def job_report(
    client: FalClient, store: JobStore, request_id: str, *, result_timeout: float | None = None
) -> tuple[int, dict[str, Any]]:
    """Answer one poll of a submitted job: where it stands or, once done, its result.

    Asks fal once for the status (a short exchange, never a wait for the job);
    only a finished job's result is fetched, then kept in ``store`` so that
    later polls do not ask fal again and the ledger records the call once
    (per process; see ``docs/web.md`` for several workers).

    Args:
        client: The shared client.
        store: Where the handle was saved at submission.
        request_id: From the URL.
        result_timeout: Deadline for fetching a finished job's result.

    Returns:
        ``(status, body)``: 404 for an unknown id; 202 with ``status`` and
        ``queue_position`` while queued or running; 200 with ``status``
        ``COMPLETED`` and ``result`` (fal's output), or ``FAILED`` and ``error``.

    Raises:
        FalwrapError: fal could not be asked (map it with :func:`error_response`).
    """
    handle = store.load(request_id) if valid_request_id(request_id) else None
    if handle is None:
        error = {"type": "NotFound", "code": "UNKNOWN_JOB", "message": f"No job {request_id!r} is known here."}
        return 404, {"error": error}
    done = store.finished(request_id)
    if done is not None:
        return 200, done
    status = client.status(handle)
    base = {"request_id": handle.request_id, "model_id": handle.model_id}
    if not status.done:
        return 202, {**base, "status": status.status, "queue_position": status.queue_position}
    try:
        output = client.result(handle, timeout=result_timeout)
        report = {**base, "status": "COMPLETED", "result": jsonable(output)}
    except (ModelError, FalTimeoutError) as exc:
        # The job itself failed (or was cancelled): that is its final state, not a failed poll.
        report = {**base, "status": "FAILED", "error": error_response(exc).body["error"]}
    store.finish(request_id, report)
    return 200, report
