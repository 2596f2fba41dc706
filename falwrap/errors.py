"""Every error falwrap raises, with a friendly message that says what to do.

The tree::

    FalwrapError(Exception)
     ├── ConfigurationError(FalwrapError, ValueError)
     ├── InvalidInputError(FalwrapError, ValueError)       local validation, before any HTTP
     ├── BudgetExceededError(FalwrapError)                 the daily budget would be exceeded
     ├── NoModelError(FalwrapError, LookupError)           selection found no model; says why
     ├── RateLimitTimeout(FalwrapError, TimeoutError)      the local limiter wait passed the deadline
     └── FalApiError(FalwrapError)                         anything fal answered, or failed to
          ├── AuthenticationError                          401 / 403 key problems
          ├── PaymentRequiredError                         402 / locked account, exhausted balance
          ├── InvalidRequestError                          400 / 422 from fal, with field details
          ├── NotFoundError                                404: unknown model or request
          ├── RateLimitError                               429
          ├── ServerError                                  5xx after retries
          ├── ModelError                                   the job ran and failed
          ├── FalConnectionError                           network failures after retries
          └── FalTimeoutError(FalApiError, TimeoutError)   deadline hit; request cancelled at fal

``str(err)`` is always the friendly message. Errors raised from a fal_client or
httpx failure chain the original (``raise ... from exc``) so ``--debug``
output and tracebacks keep the cause, while callers only ever catch falwrap's
own types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigurationError",
    "FalApiError",
    "FalConnectionError",
    "FalTimeoutError",
    "FalwrapError",
    "InvalidInputError",
    "InvalidRequestError",
    "ModelError",
    "NoModelError",
    "NotFoundError",
    "PaymentRequiredError",
    "RateLimitError",
    "RateLimitTimeout",
    "ServerError",
]


class FalwrapError(Exception):
    """Base class of every error falwrap raises."""

    #: The friendly message: what happened and what to do about it.
    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(FalwrapError, ValueError):
    """A setting is missing or invalid; the message names it, its value and what is expected."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        #: The environment variable or config field at fault, when there is one.
        self.variable = variable


class InvalidInputError(FalwrapError, ValueError):
    """An argument failed local validation; raised before any HTTP request is sent."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        #: The argument at fault (``num_images``, ``image_size.width``, ...).
        self.field = field


class BudgetExceededError(FalwrapError):
    """Running this call could push today's spend over ``daily_budget_usd``.

    Raised before anything is submitted, so nothing was spent.
    """

    def __init__(
        self,
        *,
        spent: Decimal,
        reserved: Decimal,
        estimate: Decimal,
        budget: Decimal,
        model_id: str | None = None,
    ) -> None:
        self.spent = spent
        self.reserved = reserved
        self.estimate = estimate
        self.budget = budget
        self.model_id = model_id
        what = f" for {model_id}" if model_id else ""
        super().__init__(
            f"Daily budget of ${budget} would be exceeded{what}: spent today ${spent}, "
            f"reserved by calls in flight ${reserved}, this call's estimate ${estimate}. "
            "No request was sent. Raise FAL_DAILY_BUDGET_USD or wait until 00:00 UTC."
        )


class NoModelError(FalwrapError, LookupError):
    """Model selection found nothing that fits; ``reasons`` maps each candidate to why not."""

    def __init__(self, message: str, *, reasons: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons: dict[str, str] = dict(reasons or {})


class RateLimitTimeout(FalwrapError, TimeoutError):
    """The local rate limiter could not grant a slot before the deadline.

    Nothing was sent to fal and no slot stays reserved.
    """

    def __init__(self, message: str, *, wait: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the caller would have had to wait, when known.
        self.wait = wait


class FalApiError(FalwrapError):
    """fal answered with an error, or could not be reached.

    Attributes:
        status_code: The HTTP status fal answered with (``None`` for network errors).
        error_code: ``INVALID_INPUT``, ``UNAUTHORIZED``, ``PAYMENT_REQUIRED``,
            ``RATE_LIMIT``, ``NOT_FOUND``, ``INTERNAL_ERROR``, ``SERVICE_UNAVAILABLE``,
            ``CONNECTION_ERROR``, ``TIMEOUT``, or fal's own ``error_type``.
        message: The friendly message (also ``str(err)``).
        details: fal's field-level details (its ``detail`` list), possibly empty.
        request_id: The queue request id whenever fal assigned one.
        retryable: Whether trying again could help.
        attempts: How many attempts the operation made before giving up.
    """

    #: The error code used when nothing more specific is known.
    default_code = "API_ERROR"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        details: Sequence[Mapping[str, Any]] | None = None,
        request_id: str | None = None,
        retryable: bool = False,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code or self.default_code
        self.details: list[dict[str, Any]] = [dict(d) for d in details or ()]
        self.request_id = request_id
        self.retryable = retryable
        self.attempts = attempts
        #: Seconds the server asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, "
            f"error_code={self.error_code!r}, request_id={self.request_id!r}, "
            f"retryable={self.retryable!r}, attempts={self.attempts!r}, message={self.message!r})"
        )


class AuthenticationError(FalApiError):
    """fal rejected the key (401, or a 403 that is not about the account balance)."""

    default_code = "UNAUTHORIZED"


class PaymentRequiredError(FalApiError):
    """The account cannot pay: a 402, or fal's 403 "User is locked ... Exhausted balance"."""

    default_code = "PAYMENT_REQUIRED"


class InvalidRequestError(FalApiError):
    """fal refused the input (400/422); ``details`` carries its field-level reasons."""

    default_code = "INVALID_INPUT"


class NotFoundError(FalApiError):
    """The model or the request id is unknown to fal (404)."""

    default_code = "NOT_FOUND"


class RateLimitError(FalApiError):
    """fal answered 429 and retries did not get through."""

    default_code = "RATE_LIMIT"


class ServerError(FalApiError):
    """fal or a gateway in front of it failed (5xx) and retries did not help."""

    default_code = "SERVICE_UNAVAILABLE"


class ModelError(FalApiError):
    """The job ran and failed; ``error_code`` is fal's ``error_type``."""

    default_code = "MODEL_ERROR"


class FalConnectionError(FalApiError):
    """fal could not be reached (connection refused or reset, DNS, TLS) after retries."""

    default_code = "CONNECTION_ERROR"


class FalTimeoutError(FalApiError, TimeoutError):
    """The operation's deadline passed; the job, if one was accepted, was cancelled at fal."""

    default_code = "TIMEOUT"
