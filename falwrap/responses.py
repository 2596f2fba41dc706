"""What fal's error answers mean: the typed error, and whether another attempt may succeed.

:func:`error_from_response` turns an HTTP status, headers and body from fal
(queue, run, platform or storage hosts) into the class in :mod:`falwrap.errors`
with a message that says what happened and what to do; fal's own
``error_type`` (:data:`RETRYABLE_ERROR_TYPES`, :data:`ERROR_TYPE_ADVICE`),
``X-Fal-Retryable``, ``Retry-After`` and ``X-Fal-Billable-Units`` are read here
and nowhere else.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from falwrap.errors import (
    AuthenticationError,
    FalApiError,
    FalTimeoutError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    ServerError,
)

__all__ = [
    "ERROR_TYPE_ADVICE",
    "RETRYABLE_ERROR_TYPES",
    "RETRYABLE_STATUS_CODES",
    "error_from_response",
    "parse_billable_units",
    "parse_retry_after",
]

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
