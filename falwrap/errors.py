"""Every error falwrap raises, with a friendly message that says what to do.

The tree, with each class's ``code``, the ``falwrap`` command's exit status and
the HTTP status the web integrations answer with::

    FalwrapError(Exception)                                          FALWRAP_ERROR          1  500
     ├── ConfigurationError(FalwrapError, ValueError)                CONFIGURATION          3  500
     ├── InvalidInputError(FalwrapError, ValueError)                 INVALID_INPUT          2  400
     ├── BudgetExceededError(FalwrapError)                           BUDGET_EXCEEDED        6  429
     ├── NoModelError(FalwrapError, LookupError)                     NO_MODEL               2  400
     ├── RateLimitTimeout(FalwrapError, TimeoutError)                RATE_LIMIT_TIMEOUT     5  503
     ├── BackendUnavailableError(FalwrapError, ConnectionError)      BACKEND_UNAVAILABLE    3  503
     ├── WebhookVerificationError(FalwrapError, ValueError)          WEBHOOK_UNVERIFIED     2  401
     └── FalApiError(FalwrapError)                                   API_ERROR              4  502
          ├── AuthenticationError                                    UNAUTHORIZED           4  500
          ├── PaymentRequiredError                                   PAYMENT_REQUIRED       4  402
          ├── InvalidRequestError                                    INVALID_INPUT          4  422
          ├── NotFoundError                                          NOT_FOUND              4  404
          ├── RateLimitError                                         RATE_LIMIT             4  503
          ├── ServerError                                            SERVICE_UNAVAILABLE    4  502
          ├── ModelError                                             MODEL_ERROR            4  502
          ├── FalConnectionError                                     CONNECTION_ERROR       4  502
          │    └── AmbiguousSubmissionError                          AMBIGUOUS_SUBMISSION   4  502
          └── FalTimeoutError(FalApiError, TimeoutError)             TIMEOUT                5  504

What each means: :class:`ConfigurationError` a setting is missing or invalid;
:class:`InvalidInputError` local validation failed, before any HTTP;
:class:`BudgetExceededError` the daily budget would be exceeded;
:class:`NoModelError` selection found no model, and says why;
:class:`RateLimitTimeout` the local limiter could not grant a slot before the
deadline; :class:`BackendUnavailableError` the shared state store is
unreachable; :class:`WebhookVerificationError` a webhook delivery is not
provably from fal (``.reason`` says why); :class:`FalApiError` anything fal answered, or failed to (401/403
key problems, 402 or a locked account, 400/422 with field details, 404, 429,
5xx after retries, a job that ran and failed, network failures after retries,
a submission whose fate is unknown, a deadline that passed).

The three columns are class attributes (``code``, ``exit_status``,
``http_status``), so a subclass inherits them and every consumer (the
``falwrap`` command, the web integrations, the ledger through
:func:`error_code`) reads the same table. A :class:`FalApiError` instance
carries its own ``error_code``: fal's ``error_type`` when fal named one, else
its class's ``code``.

``str(err)`` is always the friendly message. Errors raised from a fal_client or
httpx failure chain the original (``raise ... from exc``) so ``--debug``
output and tracebacks keep the cause, while callers only ever catch falwrap's
own types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

__all__ = [
    "AmbiguousSubmissionError",
    "AuthenticationError",
    "BackendUnavailableError",
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
    "WebhookVerificationError",
    "error_code",
]


class FalwrapError(Exception):
    """Base class of every error falwrap raises.

    Attributes:
        message: The friendly message: what happened and what to do about it.
        error_code: This error's code; the class's :attr:`code` unless a
            :class:`FalApiError` carries fal's own.
    """

    #: Stable, machine-readable name of this kind of error (the ledger's and the web JSON's ``code``).
    code: ClassVar[str] = "FALWRAP_ERROR"
    #: Exit status of the ``falwrap`` command when this error ends it.
    exit_status: ClassVar[int] = 1
    #: HTTP status the web integrations answer with.
    http_status: ClassVar[int] = 500

    message: str
    error_code: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = type(self).code

    def __str__(self) -> str:
        return self.message


class ConfigurationError(FalwrapError, ValueError):
    """A setting is missing or invalid; the message names it, its value and what is expected."""

    code = "CONFIGURATION"
    exit_status = 3
    # The server's own setup is wrong: nothing the client sent can fix it.
    http_status = 500

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        #: The environment variable or config field at fault, when there is one.
        self.variable = variable


class InvalidInputError(FalwrapError, ValueError):
    """An argument failed local validation; raised before any HTTP request is sent."""

    code = "INVALID_INPUT"
    exit_status = 2
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        #: The argument at fault (``num_images``, ``image_size.width``, ...).
        self.field = field


class BudgetExceededError(FalwrapError):
    """Running this call could push today's spend over ``daily_budget_usd``.

    Raised before anything is submitted, so nothing was spent.
    """

    code = "BUDGET_EXCEEDED"
    exit_status = 6
    # Too Many Requests, with Retry-After at the next 00:00 UTC: the budget renews then.
    http_status = 429

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

    code = "NO_MODEL"
    exit_status = 2
    http_status = 400

    def __init__(self, message: str, *, reasons: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons: dict[str, str] = dict(reasons or {})


class RateLimitTimeout(FalwrapError, TimeoutError):
    """The local rate limiter could not grant a slot before the deadline.

    Nothing was sent to fal and no slot stays reserved.
    """

    code = "RATE_LIMIT_TIMEOUT"
    exit_status = 5
    http_status = 503

    def __init__(self, message: str, *, wait: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the caller would have had to wait, when known.
        self.wait = wait


class BackendUnavailableError(FalwrapError, ConnectionError):
    """The shared state store (``FALWRAP_STORE_URL``, or ``FALWRAP_REDIS_URL``) could not be reached.

    Raised before a call is submitted (budget or limiter check), so nothing was
    sent to fal and nothing was spent.
    """

    code = "BACKEND_UNAVAILABLE"
    # Like a missing setting, the operator has to act (start the store, fix its URL).
    exit_status = 3
    http_status = 503


class WebhookVerificationError(FalwrapError, ValueError):
    """A webhook delivery is not provably from fal; answer it 400/401 and do not act on it.

    ``reason`` is one of ``REASONS`` (``bad_signature``, ``stale_timestamp``, ...):
    stable text to log, count or return in an error answer.
    """

    code = "WEBHOOK_UNVERIFIED"
    # Bad input from outside, like InvalidInputError; a web endpoint answers 401 (webhook_views
    # refines it by reason: 400 for a body that is not a delivery, 503 when fal's keys are unreachable).
    exit_status = 2
    http_status = 401

    #: Every reason ``falwrap.webhooks`` reports; see docs/web.md for what each means.
    REASONS = frozenset(
        {
            "missing_header",
            "malformed_header",
            "stale_timestamp",
            "future_timestamp",
            "body_too_large",
            "bad_signature",
            "unknown_key",
            "jwks_unavailable",
            "malformed_body",
            "request_id_mismatch",
        }
    )

    def __init__(self, message: str, *, reason: str) -> None:
        if reason not in self.REASONS:
            msg = f"unknown webhook verification reason {reason!r}"
            raise ValueError(msg)
        super().__init__(message)
        #: Why the delivery was rejected: one of ``REASONS``.
        self.reason = reason

    def __repr__(self) -> str:
        return f"WebhookVerificationError(reason={self.reason!r}, message={self.message!r})"


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

    code = "API_ERROR"
    exit_status = 4
    # Bad Gateway: the upstream (fal) failed; subclasses say more where a status fits better.
    http_status = 502

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
        billable_units: Decimal | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code or type(self).code
        self.details: list[dict[str, Any]] = [dict(d) for d in details or ()]
        self.request_id = request_id
        self.retryable = retryable
        self.attempts = attempts
        #: Seconds the server asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after
        #: What fal billed for a job that ran and failed (``x-fal-billable-units``), when it said.
        self.billable_units = billable_units

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, "
            f"error_code={self.error_code!r}, request_id={self.request_id!r}, "
            f"retryable={self.retryable!r}, attempts={self.attempts!r}, message={self.message!r})"
        )


class AuthenticationError(FalApiError):
    """fal rejected the key (401, or a 403 that is not about the account balance)."""

    code = "UNAUTHORIZED"
    # The server's own key is wrong: the user of the web app can do nothing about it.
    http_status = 500


class PaymentRequiredError(FalApiError):
    """The account cannot pay: a 402, or fal's 403 "User is locked ... Exhausted balance"."""

    code = "PAYMENT_REQUIRED"
    http_status = 402


class InvalidRequestError(FalApiError):
    """fal refused the input (400/422); ``details`` carries its field-level reasons."""

    code = "INVALID_INPUT"
    http_status = 422


class NotFoundError(FalApiError):
    """The model or the request id is unknown to fal (404)."""

    code = "NOT_FOUND"
    http_status = 404


class RateLimitError(FalApiError):
    """fal answered 429 and retries did not get through."""

    code = "RATE_LIMIT"
    http_status = 503


class ServerError(FalApiError):
    """fal or a gateway in front of it failed (5xx) and retries did not help."""

    code = "SERVICE_UNAVAILABLE"


class ModelError(FalApiError):
    """The job ran and failed; ``error_code`` is fal's ``error_type``."""

    code = "MODEL_ERROR"


class FalConnectionError(FalApiError):
    """fal could not be reached (connection refused or reset, DNS, TLS) after retries."""

    code = "CONNECTION_ERROR"


class AmbiguousSubmissionError(FalConnectionError):
    """A submission may have reached fal, and falwrap could not find out whether it did.

    Nothing was resubmitted (that could pay twice). The job is journaled as
    unknown and its estimate stays charged until :meth:`falwrap.FalClient.reconcile`
    learns from fal what became of it.
    """

    code = "AMBIGUOUS_SUBMISSION"


class FalTimeoutError(FalApiError, TimeoutError):
    """The operation's deadline passed; the job, if one was accepted, was cancelled at fal."""

    code = "TIMEOUT"
    exit_status = 5
    http_status = 504


def error_code(exc: BaseException) -> str:
    """The code a failed call is recorded with.

    Args:
        exc: What ended the call.

    Returns:
        A falwrap error's ``error_code`` (its class's ``code``, or fal's own
        error type for a :class:`FalApiError`); ``INTERRUPTED`` for
        ``KeyboardInterrupt``; any other exception's type name.
    """
    if isinstance(exc, FalwrapError):
        return exc.error_code
    if isinstance(exc, KeyboardInterrupt):
        return "INTERRUPTED"
    return type(exc).__name__
