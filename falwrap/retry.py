"""The retry policy: which failures retry, how long to wait, and how many tries are left.

:class:`RetryPolicy` is one immutable object in the manner of urllib3's
``Retry``: :meth:`RetryPolicy.increment` returns a new policy with one more
attempt used and the failure appended to ``history``, so a policy can be
shared between threads and a call's progress is plain data.

Backoff sleeps go through :func:`sleep`, which :func:`set_testing` turns off
for test suites (like stamina's ``set_testing``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import attrs

from falwrap.config import RetryConfig
from falwrap.errors import FalApiError

__all__ = ["RetryDetails", "RetryHook", "RetryPolicy", "is_testing", "set_testing", "sleep"]

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
        there is no point waiting: ``None``.
        """
        if not error.retryable or self.exhausted:
            return None
        delay: float = self.backoff() if error.retry_after is None else float(error.retry_after)
        delay = max(delay, self.MIN_DELAY)
        # In testing mode the sleep will not happen, so it cannot overrun the deadline.
        if remaining is not None and not is_testing() and delay >= remaining:
            return None
        return delay

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
