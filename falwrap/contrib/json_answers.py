"""Answers a web app sends: values made JSON-ready, and falwrap's errors as HTTP answers.

:func:`error_response` turns every :class:`~falwrap.FalwrapError` into an HTTP
status, headers and a JSON body carrying the friendly message; a spent daily
budget is a 429 with ``Retry-After`` set to the next 00:00 UTC. Both web
integrations and the job reports of :mod:`falwrap.contrib.web` use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs

from falwrap.errors import BudgetExceededError, FalApiError, FalwrapError, RateLimitTimeout

__all__ = ["ErrorResponse", "error_response", "jsonable"]


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
