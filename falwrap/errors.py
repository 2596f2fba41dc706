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

import email.utils
import json
import time
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


# --- Mapping what fal answered to the tree above -------------------------------------------------

#: Request (infrastructure) error types fal documents as transient: a new attempt can succeed.
RETRYABLE_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
        "internal_server_error",
        "generation_timeout",
        "downstream_service_error",
        "downstream_service_unavailable",
    }
)

#: HTTP statuses worth another attempt when fal says nothing more specific.
RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})

#: What to tell a person for fal's own error types (what happened; what to do).
ERROR_TYPE_ADVICE: Mapping[str, str] = {
    "content_policy_violation": (
        "fal's content checker flagged the prompt or input. Change it; retrying the same input will not help."
    ),
    "no_media_generated": "The model produced no output for this input. Try another prompt or seed.",
    "image_too_small": "The input image is too small for this model. Use a larger image.",
    "image_too_large": "The input image is too large for this model. Resize it and try again.",
    "image_load_error": "fal could not read the input image. Check that the URL is public and the file is an image.",
    "file_download_error": "fal could not download an input file. Check that its URL is public and reachable.",
    "face_detection_error": "No face was found in the input image, and this model needs one.",
    "file_too_large": "An input file is larger than this model accepts. Use a smaller file.",
    "generation_timeout": "The model took too long to generate. Try again, or ask for less (size, steps, duration).",
    "downstream_service_error": "A service this model depends on failed. Try again in a moment.",
    "downstream_service_unavailable": "A service this model depends on is unavailable. Try again in a few minutes.",
    "internal_server_error": "The model failed with an internal error. Try again in a moment.",
    "feature_not_supported": "This model does not support the requested feature. Check the model's parameters.",
    "request_timeout": "fal timed out waiting for the model. Try again in a moment.",
    "startup_timeout": "The model's runner did not start in time. Try again in a moment.",
    "runner_scheduling_failure": "fal could not schedule a runner for this model. Try again in a moment.",
    "runner_connection_timeout": "fal's connection to the model runner timed out. Try again in a moment.",
    "runner_disconnected": "The model runner disconnected while working. Try again in a moment.",
    "runner_connection_refused": "The model runner refused the connection. Try again in a moment.",
    "runner_connection_error": "fal could not talk to the model runner. Try again in a moment.",
    "runner_incomplete_response": "The model runner sent an incomplete answer. Try again in a moment.",
    "runner_server_error": "The model runner failed. Try again in a moment.",
    "internal_error": "fal had an internal error. Try again in a moment.",
    "client_cancelled": "The request was cancelled.",
    "client_disconnected": "The connection to fal was lost before the request finished.",
}

_NON_RETRYABLE_STATUS = frozenset({400, 401, 402, 403, 404, 422})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or ``None``.

    Negative and unparsable values give ``None``; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if 0 <= seconds < float("inf") else None


def parse_billable_units(value: str | None) -> Decimal | None:
    """A non-negative, finite ``x-fal-billable-units`` header value, or ``None`` (absent or unreadable)."""
    if value is None:
        return None
    try:
        units = Decimal(value.strip())
    except ArithmeticError:
        return None
    return units if units.is_finite() and units >= 0 else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _clause(text: str) -> str:
    """fal's text without its closing full stop: messages add their own punctuation after it."""
    return text.strip().rstrip(".").rstrip()


def _field_messages(details: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for item in details:
        loc = [str(p) for p in item.get("loc") or () if p != "body"]
        msg = _clause(str(item.get("msg") or item.get("type") or "invalid"))
        lines.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return lines


def _parse_body(body: bytes | str | None) -> tuple[Any, str]:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        return json.loads(text), text
    except ValueError:
        return None, text


def error_from_response(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes | str | None,
    *,
    request_id: str | None = None,
    job_failed: bool = False,
    model_id: str | None = None,
    attempts: int = 1,
    queue_phase: bool = True,
) -> FalApiError:
    """Turn an HTTP error answer from fal into the matching :class:`FalApiError`.

    Args:
        status_code: The HTTP status fal answered with.
        headers: Its response headers (``X-Fal-Error-Type``, ``X-Fal-Retryable``, ``Retry-After``...).
        body: The raw body: fal's JSON (``detail`` text or list, ``error_type``) or a gateway's HTML.
        request_id: The queue request id, when the job had been accepted.
        job_failed: The answer is the outcome of a job that ran (the result of a
            COMPLETED job with an error), which makes it a :class:`ModelError`.
        model_id: The endpoint called, for the message.
        attempts: Attempts made so far.
        queue_phase: The answer is about an accepted job, so an ``x-fal-request-id``
            header names it. For a refused submission it names only the HTTP
            request, not a job, and is not reported as ``request_id``.
    """
    data, text = _parse_body(body)
    detail: Any = data.get("detail") if isinstance(data, dict) else None
    details: list[dict[str, Any]] = [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []
    error_type = (data.get("error_type") if isinstance(data, dict) else None) or _header(headers, "x-fal-error-type")
    if error_type is None and details:
        error_type = details[0].get("type")
    error_type = str(error_type) if error_type else None
    if queue_phase:
        request_id = request_id or _header(headers, "x-fal-request-id")
    retry_after = parse_retry_after(_header(headers, "retry-after"))
    billable_units = parse_billable_units(_header(headers, "x-fal-billable-units"))

    retry_header = _header(headers, "x-fal-retryable") or _header(headers, "x-fal-needs-retry")
    user_timeout = status_code == 504 and _header(headers, "x-fal-request-timeout-type") is not None
    if retry_header is not None:
        retryable = retry_header.strip().lower() in {"1", "true", "yes"}
    elif user_timeout:
        retryable = False
    elif error_type is not None and error_type in ERROR_TYPE_ADVICE:
        retryable = error_type in RETRYABLE_ERROR_TYPES
    else:
        retryable = status_code in RETRYABLE_STATUS_CODES

    reason = _clause(detail) if isinstance(detail, str) else ""
    if not reason and not isinstance(data, (dict, list)):
        # A gateway's HTML page says nothing useful to a person; keep the first words only.
        reason = "" if "<" in text else _clause(text.strip()[:200])
    fields = _field_messages(details)
    what = f" calling {model_id}" if model_id else ""
    rid = f" (request {request_id})" if request_id else ""
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "details": details,
        "request_id": request_id,
        "retryable": retryable,
        "attempts": attempts,
        "retry_after": retry_after,
        "billable_units": billable_units,
    }

    if user_timeout:
        msg = (
            f"The job{rid} did not start before its start timeout (HTTP 504){what}. "
            "fal's queue was busy; raise the timeout or try again later."
        )
        return FalTimeoutError(msg, error_code="request_timeout", **kwargs)
    # A gateway's own error page (no request id, not JSON) is about the exchange, not the job.
    ingress = status_code in {502, 503, 504} and data is None and _header(headers, "x-fal-request-id") is None
    if job_failed and not ingress and status_code not in {401, 403, 402, 404, 429}:
        advice = ERROR_TYPE_ADVICE.get(error_type or "", "")
        if fields:
            advice = f"{'; '.join(fields)}. {advice}".strip()
        if not advice:
            advice = f"{reason}." if reason else "The model reported a failure without details."
        msg = f"The job{rid} failed{what} (HTTP {status_code}, {error_type or 'model error'}): {advice}"
        if retryable and "again" not in msg:
            msg += " Trying again may help."
        return ModelError(msg, error_code=error_type or "MODEL_ERROR", **kwargs)
    if status_code in {400, 422}:
        if error_type and error_type in ERROR_TYPE_ADVICE and not fields:
            problem = _clause(ERROR_TYPE_ADVICE[str(error_type)])
        else:
            problem = "; ".join(fields) or reason or "the input is not valid"
        msg = f"fal rejected the input{what} (HTTP {status_code}): {problem}. Fix the arguments and try again."
        code = error_type if error_type and error_type not in {"bad_request"} else "INVALID_INPUT"
        return InvalidRequestError(msg, error_code=code, **kwargs)
    if status_code == 401:
        msg = (
            "fal did not accept the API key (HTTP 401). Check FAL_KEY in the environment or in .env: "
            "it must be a current key of the form key_id:key_secret."
        )
        return AuthenticationError(msg, **kwargs)
    if status_code == 402 or (status_code == 403 and ("balance" in text.lower() or "locked" in text.lower())):
        msg = (
            f"Your fal account cannot pay for this request (HTTP {status_code}: {reason or 'payment required'}). "
            "Add credits at https://fal.ai/dashboard/billing, then try again."
        )
        return PaymentRequiredError(msg, **kwargs)
    if status_code == 403:
        msg = (
            f"fal refused access (HTTP 403{': ' + reason if reason else ''}). "
            "Check that FAL_KEY (environment or .env) belongs to an account allowed to use this model."
        )
        return AuthenticationError(msg, **kwargs)
    if status_code == 404:
        target = f"request {request_id}" if request_id else (f"model {model_id}" if model_id else "the endpoint")
        msg = (
            f"fal does not know {target} (HTTP 404). Check the model id at https://fal.ai/models; "
            "finished results are kept for about an hour."
        )
        return NotFoundError(msg, **kwargs)
    if status_code == 429:
        wait = f" fal asked to wait {retry_after:g} s." if retry_after is not None else ""
        msg = (
            f"fal is rate limiting this account (HTTP 429){what}.{wait} Slow down: lower "
            "FAL_REQUESTS_PER_MINUTE or FAL_MAX_CONCURRENT, or try again shortly."
        )
        return RateLimitError(msg, **kwargs)
    if status_code >= 500 or status_code == 408:
        kind = f", {error_type}" if error_type else ""
        advice = ERROR_TYPE_ADVICE.get(error_type or "", "Try again in a minute.")
        msg = (
            f"fal's service is unavailable (HTTP {status_code}{kind}){what}{rid} after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}. {advice}"
        )
        code = error_type or ("INTERNAL_ERROR" if status_code == 500 else "SERVICE_UNAVAILABLE")
        return ServerError(msg, error_code=code, **kwargs)
    msg = f"fal answered HTTP {status_code}{what}{rid}: {reason or 'an unexpected error'}."
    return FalApiError(msg, error_code=error_type, **kwargs)
