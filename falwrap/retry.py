"""The retry policy and the one retry loop every phase uses.

:class:`RetryPolicy` is one immutable object in the manner of urllib3's
``Retry``: :meth:`RetryPolicy.increment` returns a new policy with one more
attempt used and the failure appended to ``history``, so a policy can be
shared between threads and a call's progress is plain data.

:func:`retrying` is the only retry loop in falwrap: submissions, resubmissions
of failed jobs, status, stream, result, cancel, uploads, downloads and the
platform API all go through it, so every retry is decided by the policy, logged
once at WARNING, told to the ``on_retry`` hooks, and slept through the same
:func:`sleep`, which :func:`set_testing` turns off for test suites (like
stamina's ``set_testing``); polling intervals use it too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar, NoReturn, TypeVar

import attrs

from falwrap.config import RetryConfig
from falwrap.errors import FalApiError

__all__ = [
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "is_testing",
    "notify",
    "retrying",
    "set_testing",
    "sleep",
]

_T = TypeVar("_T")

logger = logging.getLogger("falwrap")


@attrs.frozen
class RetryDetails:
    """What an ``on_retry`` hook receives before each backoff sleep.

    Args:
        phase: ``submit``, ``status``, ``stream``, ``result``, ``cancel``, ``resubmit`` or ``download``.
        attempt: The number of the attempt about to be made (2 for the first retry).
        delay: Seconds the client will sleep before it.
        error: The failure that caused the retry.
        request_id: The queue request id when the job had been accepted.
        model_id: The endpoint called.
    """

    phase: str
    attempt: int
    delay: float
    error: FalApiError
    request_id: str | None
    model_id: str | None

    @property
    def reason(self) -> str:
        """A short description of the failure: its HTTP status and error code."""
        status = f"HTTP {self.error.status_code} " if self.error.status_code else ""
        return f"{status}{self.error.error_code}"


#: A callable notified of every retry, for metrics or tracing; it must not raise.
RetryHook = Callable[[RetryDetails], None]


@attrs.frozen
class RetryPolicy:
    """Decides whether a failure is retried and how long to wait; counts attempts.

    Thread-safe: it is immutable; ``increment`` returns a new policy.

    Args:
        max_retries: Retries allowed after the first attempt.
        base_delay: First backoff delay, seconds.
        max_delay: Ceiling of one delay, seconds.
        jitter: Draw each delay uniformly from half to all of the exponential value.
        retries: Retries used so far.
        history: The failures retried so far, oldest first.
    """

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 8.0
    jitter: bool = True
    retries: int = 0
    history: tuple[FalApiError, ...] = ()

    #: Never sleep less than this between two attempts, even when a server says 0,
    #: so a misbehaving peer cannot turn retries into a tight loop.
    MIN_DELAY: ClassVar[float] = 0.01

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        """A fresh policy (no retries used) from a :class:`~falwrap.RetryConfig`."""
        return cls(config.max_retries, config.base_delay, config.max_delay, config.jitter)

    @property
    def attempts(self) -> int:
        """Attempts made so far, counting the one that just failed."""
        return self.retries + 1

    @property
    def exhausted(self) -> bool:
        """True when no retry is left."""
        return self.retries >= self.max_retries

    def backoff(self) -> float:
        """The exponential delay before the next retry: ``min(base * 2**n, max)``, jittered."""
        delay = min(self.base_delay * 2.0**self.retries, self.max_delay)
        if self.jitter:
            # "Equal jitter": keep at least half the delay so backoff still grows.
            delay = random.uniform(delay / 2, delay)
        return max(delay, self.MIN_DELAY)

    def delay_for(self, error: FalApiError, remaining: float | None) -> float | None:
        """Seconds to wait before retrying ``error``, or ``None`` when it must not be retried.

        A failure is retried when it is retryable and retries are left. A
        ``Retry-After`` from the server replaces the exponential delay. When the
        wait would not end before the deadline (``remaining`` seconds from now)
        there is no point waiting: ``None`` (see :meth:`out_of_time` to tell why).
        """
        if not error.retryable or self.exhausted:
            return None
        delay: float = self.backoff() if error.retry_after is None else float(error.retry_after)
        delay = max(delay, self.MIN_DELAY)
        # In testing mode the sleep will not happen, so it cannot overrun the deadline.
        if remaining is not None and not is_testing() and delay >= remaining:
            return None
        return delay

    def out_of_time(self, error: FalApiError) -> bool:
        """Whether :meth:`delay_for` refused ``error`` only because the deadline was too close."""
        return error.retryable and not self.exhausted

    def increment(self, error: FalApiError) -> RetryPolicy:
        """A new policy with one more retry used and ``error`` appended to the history."""
        return attrs.evolve(self, retries=self.retries + 1, history=(*self.history, error))


_testing = threading.Event()


def set_testing(testing: bool = True) -> _TestingContext:
    """Turn every backoff sleep off (``True``) or back on; usable as a restoring context manager.

    For test suites of apps built on falwrap: retries still happen and are
    counted, they just do not wait. Sleeps for rate limiting are not affected.
    """
    previous = _testing.is_set()
    if testing:
        _testing.set()
    else:
        _testing.clear()
    return _TestingContext(previous)


class _TestingContext:
    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        set_testing(self._previous)


def is_testing() -> bool:
    """Whether :func:`set_testing` has turned backoff sleeps off."""
    return _testing.is_set()


def sleep(seconds: float) -> None:
    """Sleep for a backoff delay, unless testing mode is on."""
    if seconds > 0 and not _testing.is_set():
        time.sleep(seconds)


@contextmanager
def testing() -> Iterator[None]:
    """Context manager form of ``set_testing(True)``."""
    with set_testing(True):
        yield


def notify(hooks: tuple[RetryHook, ...], details: RetryDetails) -> None:
    """Log one WARNING for a retry and pass it to every hook; a failing hook is logged, not raised."""
    logger.warning(
        "[falwrap] retrying %s %s (attempt %d) in %.2f s after %s%s",
        details.phase,
        details.model_id or "",
        details.attempt,
        details.delay,
        details.reason,
        f" (request {details.request_id})" if details.request_id else "",
        extra={
            "falwrap_phase": details.phase,
            "falwrap_attempt": details.attempt,
            "falwrap_delay_s": details.delay,
            "falwrap_error_code": details.error.error_code,
            "falwrap_request_id": details.request_id,
        },
    )
    for hook in hooks:
        try:
            hook(details)
        except Exception:
            logger.exception("[falwrap] on_retry hook %r failed", hook)


def retrying(
    attempt: Callable[[], _T],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException, int], tuple[str, FalApiError] | None],
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    hooks: tuple[RetryHook, ...] = (),
    model_id: str | None = None,
    request_id: str | None = None,
    on_retry: Callable[[RetryDetails], None] | None = None,
    on_deadline: Callable[[FalApiError, BaseException], NoReturn] | None = None,
    pause: Callable[[float], None] | None = None,
) -> _T:
    """Run ``attempt`` until it succeeds, retrying what ``classify`` says is a retryable failure.

    The one retry loop of falwrap (see the module docstring).

    Args:
        attempt: One try; its return value is returned.
        policy: The policy at the start (retries already used count).
        classify: Maps an exception and the attempts made so far to ``(phase, error)``,
            the typed error to retry or raise (built with ``attempts``), or ``None`` to
            let the exception through untouched (it is not a failure of this exchange).
        deadline: ``clock()`` value after which no retry starts.
        clock: Monotonic seconds (injectable with ``pause`` for deterministic tests).
        hooks: Told about each retry, with the WARNING log line (:func:`notify`).
        model_id, request_id: For the log line and hooks (``request_id`` falls back to the error's).
        on_retry: Called before the backoff sleep (after the hooks), e.g. to prepare a resubmission.
        on_deadline: Called instead of raising when a retryable failure has no time left
            for its backoff; it must raise (e.g. a timeout that cancels the job).
        pause: Sleeps for a backoff (default :func:`sleep`, which testing mode turns off).

    Raises:
        FalApiError: the classified error, when it is not retryable or retries ran out
            (chained to the original exception).
    """
    while True:
        try:
            return attempt()
        except BaseException as exc:
            classified = classify(exc, policy.attempts)
            if classified is None:
                raise
            phase, error = classified
            cause: BaseException = exc
        remaining = None if deadline is None else deadline - clock()
        delay = policy.delay_for(error, remaining)
        if delay is None:
            if on_deadline is not None and remaining is not None and policy.out_of_time(error):
                on_deadline(error, cause)
            raise error from cause
        details = RetryDetails(phase, policy.attempts + 1, delay, error, request_id or error.request_id, model_id)
        notify(hooks, details)
        if on_retry is not None:
            on_retry(details)
        policy = policy.increment(error)
        (pause or sleep)(delay)
