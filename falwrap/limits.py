"""What every limiter shares: the two interfaces, the held :class:`Slot`, and their checks and messages.

Two interfaces, each implemented in-process (:mod:`falwrap.limiter`) and by every
shared store (:mod:`falwrap.backends`):

* :class:`RateLimiter` -- ``acquire(timeout=None) -> float`` and ``try_acquire() -> float``.
* :class:`ConcurrencyLimiter` -- ``acquire(timeout=None) -> Slot``.

:func:`limiter_wait_at_most` bounds how long the calls made in a block wait for
either, so a task queue can put a task off instead of holding its worker.

The validators and error messages live here once, so that every implementation
refuses the same values with the same words.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from falwrap.errors import ConfigurationError, RateLimitTimeout

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "ConcurrencyLimiter",
    "RateLimiter",
    "Slot",
    "check_count",
    "check_lease",
    "check_rate",
    "check_timeout",
    "check_wait_bound",
    "concurrency_timeout",
    "limiter_wait_at_most",
    "rate_timeout",
    "within_wait_bound",
]

_S = TypeVar("_S", bound="Slot")


def check_rate(rate_per_minute: float) -> float:
    """``rate_per_minute`` as a float, or ConfigurationError naming it."""
    if (
        not isinstance(rate_per_minute, (int, float))
        or isinstance(rate_per_minute, bool)
        or not math.isfinite(rate_per_minute)
        or rate_per_minute <= 0
    ):
        msg = f"rate_per_minute={rate_per_minute!r} is not valid: expected a positive, finite number, such as 60."
        raise ConfigurationError(msg, variable="rate_per_minute")
    return float(rate_per_minute)


def check_count(value: int, name: str) -> int:
    """A whole number >= 1, or ConfigurationError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"{name}={value!r} is not valid: expected a whole number of at least 1."
        raise ConfigurationError(msg, variable=name)
    return value


def check_lease(lease_seconds: float) -> float:
    """``lease_seconds`` as a float of at least 0.01, or ConfigurationError naming it."""
    if (
        not isinstance(lease_seconds, (int, float))
        or isinstance(lease_seconds, bool)
        or not math.isfinite(lease_seconds)
        or lease_seconds < 0.01
    ):
        msg = f"lease_seconds={lease_seconds!r} is not valid: expected a number of seconds of at least 0.01."
        raise ConfigurationError(msg, variable="lease_seconds")
    return float(lease_seconds)


def check_timeout(timeout: float | None) -> float | None:
    """A wait bound: ``None`` (or +inf) waits forever; negatives mean no wait; NaN and non-numbers are TypeError."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or math.isnan(timeout):
        msg = f"timeout={timeout!r} is not valid: expected None or a number of seconds."
        raise TypeError(msg)
    if math.isinf(timeout) and timeout > 0:
        return None  # waiting forever; lock and socket timeouts reject inf
    return max(0.0, float(timeout))


def rate_timeout(wait: float, timeout: float) -> RateLimitTimeout:
    """The error when the next rate slot is further away than the caller may wait."""
    msg = (
        f"Rate limit: the next request slot opens in {wait:.3f} s, later than the {timeout:g} s "
        "timeout allows. Nothing was sent and no slot stays reserved. Raise FAL_REQUESTS_PER_MINUTE, "
        "or the timeout."
    )
    return RateLimitTimeout(msg, wait=wait)


def concurrency_timeout(max_in_flight: int, timeout: float) -> RateLimitTimeout:
    """The error when no concurrency place came free in time."""
    msg = (
        f"Concurrency limit: all {max_in_flight} job slots stayed busy for the {timeout:g} s timeout. "
        "Nothing was sent. Raise FAL_MAX_CONCURRENT, or the timeout."
    )
    return RateLimitTimeout(msg, wait=None)


class Slot(abc.ABC):
    """A held place under a :class:`ConcurrencyLimiter`; give it back with :meth:`release`.

    A context manager: leaving the ``with`` block releases it on every path
    (return, exception, ``KeyboardInterrupt``). Thread-safe; :meth:`release` is idempotent.
    """

    __slots__ = ()

    #: Seconds a lease lasts without :meth:`renew` (``None``: the slot never expires).
    lease_seconds: float | None = None

    @abc.abstractmethod
    def release(self) -> None:
        """Give the place back. Idempotent and never raises for an already released slot."""

    @abc.abstractmethod
    def renew(self) -> bool:
        """Extend the lease while a long job runs.

        Returns:
            ``True`` while the slot is held. ``False`` when the lease had run out
            and could not be taken back (another holder got it), or the backend
            could not be reached; the job may go on, but the cap was not enforced for it.
        """

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@runtime_checkable
class RateLimiter(Protocol):
    """Paces requests: each :meth:`acquire` grants one request slot (implementations are thread-safe)."""

    def acquire(self, timeout: float | None = None) -> float:
        """Wait for the next request slot and take it.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed.

        Returns:
            Seconds waited (0.0 when a slot was free).

        Raises:
            RateLimitTimeout: the slot is further away than ``timeout``; raised at
                once, and no slot stays reserved.
        """
        ...

    def try_acquire(self) -> float:
        """Take a slot only if one is free now.

        Returns:
            0.0 when a slot was granted, else the seconds until one would be
            (nothing is reserved).
        """
        ...


@runtime_checkable
class ConcurrencyLimiter(Protocol):
    """Caps jobs in flight: each :meth:`acquire` holds one place until its :class:`Slot` is released."""

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a free place and hold it.

        Args:
            timeout: Longest wait in seconds; ``None`` waits as long as needed.

        Returns:
            The held :class:`Slot`; use it as a context manager.

        Raises:
            RateLimitTimeout: no place came free within ``timeout``.
        """
        ...


# --- A bound on limiter waits, per context -------------------------------------------------------

#: The longest a call in this context may wait for the rate limiter or a concurrency place.
#: A context variable, not a client setting: one worker's threads (or Celery tasks) share a
#: client, and each decides for itself whether it can afford to wait.
_WAIT_BOUND: contextvars.ContextVar[float | None] = contextvars.ContextVar("falwrap_limiter_wait", default=None)


def check_wait_bound(seconds: float, name: str = "seconds") -> float:
    """A bound on limiter waits as a float, or ConfigurationError naming ``name``.

    Raises:
        ConfigurationError: ``seconds`` is not a finite number of at least 0.
    """
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        msg = f"{name}={seconds!r} is not valid: expected a finite number of seconds, at least 0, such as 10."
        raise ConfigurationError(msg, variable=name)
    return float(seconds)


@contextlib.contextmanager
def limiter_wait_at_most(seconds: float, *, name: str = "seconds") -> Iterator[None]:
    """Calls made in the block wait at most ``seconds`` for the rate limiter and a concurrency place.

    A longer wait raises :class:`~falwrap.errors.RateLimitTimeout` instead: at once for the
    rate limiter, which decides before reserving (``wait`` holds the seconds until the slot,
    and no slot is taken or lost), and after ``seconds`` for a concurrency place (``wait`` is
    ``None``). Nothing is sent to fal; an idempotency key used in the call stays free for
    the next attempt. The bound holds for the current thread (or asyncio task) only, and
    nested blocks keep the shorter bound.

    Example::

        with limiter_wait_at_most(5):
            client.image("a lighthouse")   # RateLimitTimeout if the slot is over 5 s away

    Args:
        seconds: The longest wait, a finite number of seconds, at least 0.
        name: The name ``seconds`` has for the caller, used in the error message.

    Raises:
        ConfigurationError: ``seconds`` is not a finite number of at least 0.
    """
    seconds = check_wait_bound(seconds, name)
    outer = _WAIT_BOUND.get()
    token = _WAIT_BOUND.set(seconds if outer is None else min(outer, seconds))
    try:
        yield
    finally:
        _WAIT_BOUND.reset(token)


def within_wait_bound(timeout: float) -> float:
    """``timeout`` (seconds a limiter may wait) shortened to the enclosing :func:`limiter_wait_at_most`."""
    bound = _WAIT_BOUND.get()
    return timeout if bound is None else min(timeout, bound)
