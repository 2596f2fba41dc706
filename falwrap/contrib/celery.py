"""Celery integration: fal calls in tasks that never pay twice and never hold a worker on the limiter.

Make a task with ``base=FalTask`` and call fal through ``self.fal``::

    from celery import Celery
    from falwrap.contrib.celery import FalTask

    app = Celery("tasks", broker="redis://127.0.0.1:6379/0", backend="redis://127.0.0.1:6379/0")

    @app.task(base=FalTask, bind=True)
    def make_image(self: FalTask, prompt: str) -> object:
        return self.fal.image(prompt, model="fal-ai/flux/schnell")

    make_image.delay("a lighthouse at dusk").get()
    # {"request_id": "...", "model": "fal-ai/flux/schnell", "cost_usd": "0.003000",
    #  "urls": ["https://..."], "state": "succeeded"}

What :class:`FalTask` adds:

* **Task ids are idempotency keys.** ``self.fal.image()``, ``video()`` and ``run()`` pass the
  Celery task id as ``idempotency_key`` (the n-th call of one run: ``"<task id>:<n>"``). A
  task redelivered after its worker died (``acks_late``) or retried gets the original job:
  its stored result, the same request id followed to its end, or, when the dead worker's
  submission was never answered, fal's request list asked before anything is sent again.
* **Late acknowledgement.** ``acks_late`` and ``reject_on_worker_lost`` are on, so a task
  whose worker is killed mid-job is delivered again instead of lost.
* **The limiter does not hold a worker.** A call that would wait longer than
  :attr:`FalTask.fal_max_wait` for the rate limiter (or a concurrency place) is not made:
  the task is retried (``self.retry(countdown=...)``) when its slot is due. Nothing is sent
  and no slot is taken for the deferred call.
* **A small JSON answer.** A task returning an ``ImageResult`` or ``VideoResult`` returns
  :func:`summary` of it instead; the full result payload stays in the journal.
* **One client per worker process**, :func:`get_client`, built on first use from
  :func:`configure`'s settings, else the environment (``FalConfig.from_env``: ``FAL_KEY``,
  ``FALWRAP_STORE_URL``, ...); a child forked by Celery's prefork pool builds its own.

Workers must share one store for the keys to hold across them: ``FALWRAP_STORE_URL`` set to
``redis://...`` or ``postgresql://...`` for workers on several hosts, ``sqlite:///path.db``
for workers on one host. See ``docs/scaling.md``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import celery
from celery import signals

from falwrap.client import FalClient
from falwrap.config import FalConfig
from falwrap.contrib import _common
from falwrap.errors import ConfigurationError, InvalidInputError, RateLimitTimeout
from falwrap.journal import JobState
from falwrap.limits import check_wait_bound, limiter_wait_at_most
from falwrap.results import ImageResult, VideoResult

__all__ = ["FalTask", "TaskCalls", "configure", "get_client", "summary"]

_T = TypeVar("_T")

logger = logging.getLogger("falwrap")


class _Process:
    """This process's client (with the pid that built it) and the settings to build one with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.config: FalConfig | None = None
        self.client: tuple[int, FalClient] | None = None

    def after_fork_in_child(self) -> None:
        # A lock held by another thread of the parent at fork time would stay held in the child.
        self.lock = threading.Lock()

    def take_client(self) -> tuple[int, FalClient] | None:
        with self.lock:
            built, self.client = self.client, None
        return built


_process = _Process()
if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_process.after_fork_in_child)


def configure(config: FalConfig | None) -> None:
    """Set the settings of the worker's client; ``None`` goes back to the environment.

    Call it where the Celery app is made (before the worker forks). A client already
    built in this process is closed; the next :func:`get_client` builds one with ``config``.

    Args:
        config: The settings, or ``None`` for ``FalConfig.from_env`` (with ``FALWRAP_ENV_FILE``,
            default ``.env``).

    Raises:
        ConfigurationError: ``config`` is not a :class:`~falwrap.FalConfig` or ``None``.
    """
    given: object = config  # checked at run time too: callers are not all type-checked
    if given is not None and not isinstance(given, FalConfig):
        msg = f"config={given!r} is not valid: expected a falwrap.FalConfig or None."
        raise ConfigurationError(msg, variable="config")
    with _process.lock:
        _process.config = config
    _close(_process.take_client())


def get_client() -> FalClient:
    """The worker process's :class:`~falwrap.FalClient`, built on first use. Thread-safe.

    A client inherited through ``fork`` shares its parent's sockets, so a forked
    child (Celery's prefork pool) builds its own.

    Returns:
        The client.

    Raises:
        ConfigurationError: no API key, an invalid setting, or the store does not answer.
    """
    pid = os.getpid()
    built = _process.client
    if built is not None and built[0] == pid:
        return built[1]
    with _process.lock:
        built = _process.client
        if built is None or built[0] != pid:
            config = _process.config or FalConfig.from_env(_common.env_file_setting(...))
            if config.store_url.startswith("memory"):
                logger.warning(
                    "[falwrap] the store is memory: (FALWRAP_STORE_URL is unset): task ids bind fal jobs in "
                    "this worker process only, so a task redelivered to another worker pays again. Set it to "
                    "a redis://, postgresql:// or sqlite:/// store every worker shares."
                )
            built = _process.client = (pid, FalClient(config))
        return built[1]


def _close(built: tuple[int, FalClient] | None) -> None:
    # Only the process that built a client closes it: a forked child would close its parent's sockets.
    if built is not None and built[0] == os.getpid():
        built[1].close()


def _on_process_shutdown(**_: Any) -> None:
    """A prefork child exits: close its client (its open jobs become reconcilable at once)."""
    _close(_process.take_client())


def _on_worker_shutdown(**_: Any) -> None:
    """The worker exits (solo and thread pools run tasks in this process): close the client."""
    _close(_process.take_client())


signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)


def summary(result: ImageResult | VideoResult) -> dict[str, Any]:
    """A result as a task returns it: small and JSON-able; the full payload stays in the journal.

    Args:
        result: What ``image()`` or ``video()`` returned.

    Returns:
        ``request_id``, ``model``, ``cost_usd`` (a decimal string, exact), ``urls`` (the
        output files) and ``state`` (``"succeeded"``).

    Raises:
        InvalidInputError: ``result`` is neither an ``ImageResult`` nor a ``VideoResult``.
    """
    given: object = result  # checked at run time too: a task's return value is not type-checked
    if isinstance(given, ImageResult):
        urls = [image.url for image in given.images]
    elif isinstance(given, VideoResult):
        urls = [given.video.url]
    else:
        msg = f"result: expected an ImageResult or a VideoResult, got {type(given).__name__}."
        raise InvalidInputError(msg, field="result")
    return {
        "request_id": result.request_id,
        "model": result.model,
        "cost_usd": str(result.cost_usd),
        "urls": urls,
        "state": JobState.SUCCEEDED.value,
    }


class TaskCalls:
    """The worker's client as one task run sees it: ``image``, ``video`` and ``run`` keyed by the task id.

    Args:
        task: The running task.
    """

    def __init__(self, task: FalTask) -> None:
        self._task = task

    def image(self, prompt: str, **kwargs: Any) -> ImageResult:
        """:meth:`FalClient.image <falwrap.FalClient.image>` with the task's idempotency key.

        Raises:
            celery.exceptions.Retry: the limiter wait was longer than ``fal_max_wait``.
            FalwrapError: as ``FalClient.image`` (and ``RateLimitTimeout`` once
                ``fal_max_deferrals`` is reached).
        """
        return self._task.fal_call(lambda key: get_client().image(prompt, idempotency_key=key, **kwargs), kwargs)

    def video(self, prompt: str, **kwargs: Any) -> VideoResult:
        """:meth:`FalClient.video <falwrap.FalClient.video>` with the task's key. Raises as :meth:`image`."""
        return self._task.fal_call(lambda key: get_client().video(prompt, idempotency_key=key, **kwargs), kwargs)

    def run(self, model_id: str, arguments: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        """:meth:`FalClient.run <falwrap.FalClient.run>` with the task's key. Raises as :meth:`image`."""
        return self._task.fal_call(
            lambda key: get_client().run(model_id, arguments, idempotency_key=key, **kwargs), kwargs
        )


# celery ships no type information: its Task is Any to mypy.
class FalTask(celery.Task):  # type: ignore[misc]
    """Base class of tasks that call fal (``@app.task(base=FalTask, bind=True)``).

    See the module docstring. Set the attributes below on the task
    (``@app.task(base=FalTask, bind=True, fal_max_wait=30)``) or a subclass.
    Run eagerly (``apply()``, ``task_always_eager``) or called directly, a task holds
    no worker: its calls wait for the limiter as any client call does. Called directly
    it has no task id, so its calls have no idempotency key.
    """

    acks_late = True
    reject_on_worker_lost = True
    #: Longest wait for the rate limiter or a concurrency place, in seconds, before the task is put off.
    fal_max_wait: float = 10.0
    #: Most retries (``request.retries``, every retry counts) a task may reach by being put off.
    fal_max_deferrals: int = 100

    @property
    def fal(self) -> TaskCalls:
        """The worker's client with this run's idempotency keys (see :class:`TaskCalls`)."""
        return TaskCalls(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task; an ``ImageResult`` or ``VideoResult`` it returns becomes its :func:`summary`."""
        result = super().__call__(*args, **kwargs)
        if isinstance(result, (ImageResult, VideoResult)):
            return summary(result)
        return result

    def next_idempotency_key(self) -> str | None:
        """The key of this run's next fal call: the task id, then ``"<task id>:2"``, ``":3"``...

        The same task code redelivered or retried makes the same calls in the same
        order, so each call finds its own earlier job.

        Returns:
            The key, or ``None`` when the task was called directly (no id).
        """
        request = self.request
        if request.called_directly or not request.id:
            return None
        made = int(getattr(request, "falwrap_calls", 0)) + 1
        request.falwrap_calls = made
        return str(request.id) if made == 1 else f"{request.id}:{made}"

    def fal_call(self, call: Callable[[str | None], _T], kwargs: dict[str, Any]) -> _T:
        """Make one fal call with the next idempotency key; a long limiter wait retries the task instead.

        Args:
            call: Makes the call with the key it is given.
            kwargs: The call's keyword arguments (an explicit ``idempotency_key`` is refused).

        Returns:
            What ``call`` returned.

        Raises:
            celery.exceptions.Retry: the wait was longer than ``fal_max_wait``; the task runs
                again when the slot is due (``fal_max_wait`` for a concurrency place).
            ConfigurationError: ``fal_max_wait`` or ``fal_max_deferrals`` is invalid.
            InvalidInputError: ``idempotency_key`` was passed (the task id is the key).
        """
        max_wait = check_wait_bound(self.fal_max_wait, "fal_max_wait")
        deferrals = self.fal_max_deferrals
        if not isinstance(deferrals, int) or isinstance(deferrals, bool) or deferrals < 0:
            msg = f"fal_max_deferrals={deferrals!r} is not valid: expected a whole number of at least 0."
            raise ConfigurationError(msg, variable="fal_max_deferrals")
        if "idempotency_key" in kwargs:
            msg = "idempotency_key: a FalTask's calls are keyed by the task id; call get_client() for your own keys."
            raise InvalidInputError(msg, field="idempotency_key")
        key = self.next_idempotency_key()
        if self.request.called_directly or self.request.is_eager:
            # No worker slot to give back, and an eager retry would run again at once: wait as any call does.
            return call(key)
        with limiter_wait_at_most(max_wait, name="fal_max_wait"):
            try:
                return call(key)
            except RateLimitTimeout as exc:
                countdown = exc.wait if exc.wait is not None else max(1.0, max_wait)
                raise self.retry(countdown=countdown, exc=exc, max_retries=deferrals) from exc
