"""Observers of finished calls: the INFO log line and Prometheus metrics.

Stores only store. The client tells each observer about every :class:`CallRecord`
it writes, after the record is stored; an observer that raises is logged and
ignored, because a call's outcome must not depend on its bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from falwrap import metrics as _metrics
from falwrap.records import CallRecord

__all__ = ["CallObserver", "default_observers", "format_call_log", "log_call", "metrics_observer", "notify"]

#: Where call lines go; applications configure this logger, not the root.
logger = logging.getLogger("falwrap")

#: Told about every finished call, after its record is stored. Must not block for long.
CallObserver = Callable[[CallRecord], None]

_FOUR_PLACES = Decimal("0.0001")


def _format_cost(cost: Decimal) -> str:
    # Cents-and-below reads best with four places ($0.0250); keep more only when they carry money.
    four = cost.quantize(_FOUR_PLACES)
    return str(four) if four == cost else f"{cost.normalize():f}"


def format_call_log(rec: CallRecord) -> tuple[str, tuple[object, ...], dict[str, Any]]:
    """The log template, its arguments and structured ``extra`` fields for one call.

    The rendered message reads ``[falwrap] generate fal-ai/flux/dev SUCCESS (3512 ms, $0.0250)``
    or ``[falwrap] generate fal-ai/flux/dev FAILED RATE_LIMIT (120 ms, $0.0000)``.

    Args:
        rec: The finished call.

    Returns:
        ``(template, args, extra)`` ready for ``logger.info(template, *args, extra=extra)``.
    """
    outcome = "SUCCESS" if rec.success else f"FAILED {rec.error_code or 'UNKNOWN_ERROR'}"
    args = (rec.operation, rec.model_id, outcome, round(rec.duration_ms), _format_cost(rec.cost_usd))
    extra = {
        "falwrap_operation": rec.operation,
        "falwrap_model": rec.model_id,
        "falwrap_success": rec.success,
        "falwrap_error_code": rec.error_code,
        "falwrap_duration_ms": rec.duration_ms,
        "falwrap_cost_usd": str(rec.cost_usd),
        "falwrap_request_id": rec.request_id,
    }
    return "[falwrap] %s %s %s (%d ms, $%s)", args, extra


def log_call(rec: CallRecord, log: logging.Logger | None = None) -> None:
    """Write the one INFO line for a recorded call (see :func:`format_call_log`).

    Args:
        rec: The finished call.
        log: Where to write; the ``falwrap`` logger by default.
    """
    log = log or logger
    if log.isEnabledFor(logging.INFO):
        template, args, extra = format_call_log(rec)
        log.info(template, *args, extra=extra)


def metrics_observer(rec: CallRecord) -> None:
    """Update the Prometheus metrics of :mod:`falwrap.metrics` (a no-op without ``prometheus_client``)."""
    _metrics.observe_call(rec)


def default_observers() -> tuple[CallObserver, ...]:
    """What a client tells by default: the log line, then the metrics."""
    return (log_call, metrics_observer)


def notify(observers: Iterable[CallObserver], rec: CallRecord) -> None:
    """Tell every observer about ``rec``; one that raises is logged, never propagated."""
    for observer in observers:
        try:
            observer(rec)
        except Exception:
            logger.exception("[falwrap] call observer %r failed", observer)
