"""Many calls at once: :meth:`FalClient.map` runs them at the rate and concurrency the limiter allows.

Each request is one blocking call (``image``, ``video``, ``upscale`` or ``run``)
made on a worker thread; outcomes come back as they finish, each the call's
result or its typed error, never an exception in the middle of the batch.
With an idempotency key per request (``idempotency_prefix`` or the request's
own ``key``), running the same batch again returns the finished results from
the journal, follows the jobs still running at fal and runs only the rest:
nothing is paid for twice.

Stopping early (Ctrl-C in the loop, ``break``, closing the generator) stops
dispatching at once; calls already running keep going on their daemon threads
until the process exits, and their jobs are in the journal either way.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import attrs

from falwrap.errors import FalwrapError, InvalidInputError

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["BatchProgress", "BatchRequest", "CallOutcome", "default_concurrency", "run_map"]

Operation = Literal["image", "video", "upscale", "run"]

#: Most worker threads a map uses by default: beyond this, threads only wait on the limiter.
MAX_DEFAULT_CONCURRENCY = 64


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen
class BatchRequest:
    """One call of a :meth:`FalClient.map`.

    Args:
        arguments: For ``image``/``video``: ``prompt`` and any parameters (``size``,
            ``num_images``, ``duration``...); for ``upscale``: ``image`` and ``scale``; for
            ``run``: the endpoint's input.
        operation: Which call: ``image`` (default), ``video``, ``upscale`` or ``run``.
        model: The endpoint (required for ``run``).
        id: The caller's name for the request, returned with its outcome.
        key: The idempotency key of the call (default: ``idempotency_prefix`` + ``id`` or position).
    """

    arguments: Mapping[str, Any] = attrs.field(converter=_freeze)
    operation: Operation = "image"
    model: str | None = None
    id: str | None = None
    key: str | None = None

    @classmethod
    def of(cls, value: object) -> BatchRequest:
        """A request from a plain mapping: ``operation``, ``model``, ``id`` and ``key`` are taken out,
        the rest are the arguments.

        Raises:
            InvalidInputError: not a mapping, or an unknown operation.
        """
        if isinstance(value, BatchRequest):
            return value
        if not isinstance(value, Mapping):
            msg = f"requests: each request must be a BatchRequest or a mapping, got {type(value).__name__}."
            raise InvalidInputError(msg, field="requests")
        rest = dict(value)
        operation = rest.pop("operation", "image")
        if operation not in ("image", "video", "upscale", "run"):
            msg = f"operation: expected image, video, upscale or run, got {operation!r}."
            raise InvalidInputError(msg, field="operation")
        model = rest.pop("model", None)
        ident = rest.pop("id", None)
        key = rest.pop("key", None)
        return cls(rest, operation, model, None if ident is None else str(ident), key)


@attrs.frozen
class CallOutcome:
    """How one request of a map ended.

    Args:
        index: Its position in the requests (0-based).
        request: The request.
        result: What the call returned (``ImageResult``, ``VideoResult`` or the output dict), or ``None``.
        error: The call's error, or ``None`` on success.
    """

    index: int
    request: BatchRequest
    result: Any = attrs.field(default=None, repr=False)
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the call returned a result."""
        return self.error is None

    @property
    def request_id(self) -> str | None:
        """fal's request id, when a job was accepted."""
        found = getattr(self.result, "request_id", None) or getattr(self.error, "request_id", None)
        return found if isinstance(found, str) else None

    @property
    def cost_usd(self) -> Decimal:
        """What the call's result says it cost (zero for errors)."""
        cost = getattr(self.result, "cost_usd", None)
        return cost if isinstance(cost, Decimal) else Decimal(0)


@attrs.frozen
class BatchProgress:
    """Where a map stands, given to its ``on_progress`` callback after every change.

    Args:
        dispatched: Requests handed to a worker so far.
        running: Calls under way now.
        done: Calls that returned a result.
        failed: Calls that ended in an error.
        spent_usd: What the finished calls cost.
    """

    dispatched: int
    running: int
    done: int
    failed: int
    spent_usd: Decimal


def default_concurrency(client: FalClient) -> int:
    """How many calls a map runs at once when not told: the concurrency cap if there is one,
    else enough to use the rate without any call waiting on the limiter past half its deadline."""
    rate = client.config.rate_limit
    if rate.max_concurrent is not None:
        return rate.max_concurrent
    per_second = rate.requests_per_minute / 60.0
    fit = math.floor(per_second * client.config.timeouts.image / 2) + rate.burst
    return max(1, min(MAX_DEFAULT_CONCURRENCY, fit))


def _call(client: FalClient, request: BatchRequest, key: str | None) -> Any:
    args = dict(request.arguments)
    if request.operation == "run":
        if request.model is None:
            msg = "model: a 'run' request needs the endpoint id."
            raise InvalidInputError(msg, field="model")
        return client.run(request.model, args, idempotency_key=key)
    if request.operation == "upscale":
        image = args.pop("image", None)
        return client.upscale(image, model=request.model, idempotency_key=key, **args)
    prompt = args.pop("prompt", None)
    if request.operation == "video":
        return client.video(prompt, model=request.model, idempotency_key=key, **args)
    return client.image(prompt, model=request.model, idempotency_key=key, **args)


def run_map(
    client: FalClient,
    requests: Iterable[BatchRequest | Mapping[str, Any]],
    *,
    concurrency: int | None = None,
    idempotency_prefix: str | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> Iterator[CallOutcome]:
    """See :meth:`falwrap.FalClient.map`."""
    workers = default_concurrency(client) if concurrency is None else concurrency
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        msg = f"concurrency: expected a whole number from 1 to 1024, got {concurrency!r}."
        raise InvalidInputError(msg, field="concurrency")
    if idempotency_prefix is not None and (not isinstance(idempotency_prefix, str) or not idempotency_prefix):
        msg = f"idempotency_prefix: expected a non-empty string, got {idempotency_prefix!r}."
        raise InvalidInputError(msg, field="idempotency_prefix")
    return _Map(client, iter(requests), workers, idempotency_prefix, on_progress).outcomes()


class _Map:
    """One map's dispatcher: at most ``workers`` calls in flight, outcomes in finishing order."""

    def __init__(
        self,
        client: FalClient,
        requests: Iterator[BatchRequest | Mapping[str, Any]],
        workers: int,
        prefix: str | None,
        on_progress: Callable[[BatchProgress], None] | None,
    ) -> None:
        self._client = client
        self._requests = requests
        self._workers = workers
        self._prefix = prefix
        self._on_progress = on_progress
        self._finished: queue.SimpleQueue[CallOutcome] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._counts = [0, 0, 0, 0]  # dispatched, running, done, failed
        self._spent = Decimal(0)

    def _key(self, index: int, request: BatchRequest) -> str | None:
        if request.key is not None:
            return request.key
        if self._prefix is None:
            return None
        return f"{self._prefix}:{request.id if request.id is not None else index}"

    def _work(self, index: int, request: BatchRequest) -> None:
        try:
            result = _call(self._client, request, self._key(index, request))
        except BaseException as exc:
            self._finished.put(CallOutcome(index, request, error=exc))
        else:
            self._finished.put(CallOutcome(index, request, result=result))

    def _progress(self) -> None:
        if self._on_progress is not None:
            dispatched, running, done, failed = self._counts
            self._on_progress(BatchProgress(dispatched, running, done, failed, self._spent))

    def _dispatch(self) -> bool:
        """Start the next request; ``False`` when there is none."""
        try:
            raw = next(self._requests)
        except StopIteration:
            return False
        index = self._counts[0]
        self._counts[0] += 1
        self._counts[1] += 1
        try:
            request = BatchRequest.of(raw)
        except FalwrapError as exc:
            self._finished.put(CallOutcome(index, BatchRequest({}, id=None), error=exc))
            return True
        thread = threading.Thread(target=self._work, args=(index, request), name=f"falwrap-map-{index}", daemon=True)
        thread.start()
        return True

    def outcomes(self) -> Iterator[CallOutcome]:
        more = True
        try:
            while True:
                while more and self._counts[1] < self._workers and not self._stopped.is_set():
                    more = self._dispatch()
                self._progress()
                if self._counts[1] == 0:
                    return
                outcome = self._finished.get()
                self._counts[1] -= 1
                if outcome.ok:
                    self._counts[2] += 1
                    self._spent += outcome.cost_usd
                else:
                    self._counts[3] += 1
                yield outcome
        finally:
            self._stopped.set()
