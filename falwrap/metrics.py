"""Prometheus metrics for falwrap calls, live when ``prometheus_client`` is installed.

The client's metrics observer (:func:`falwrap.observers.metrics_observer`) calls
:func:`observe_call` for every record; ledgers only store. Without ``prometheus_client``
it does nothing; with it, the first call registers four metrics on the default
registry (import is deferred until then, so ``import falwrap`` stays cheap):

- ``falwrap_calls_total{model, operation, outcome}``: calls, ``outcome`` is ``success`` or ``failure``
- ``falwrap_call_failures_total{model, error_code}``: failed calls by error code
- ``falwrap_cost_usd_total{model}``: dollars spent (a float, as Prometheus needs; the ledger is exact)
- ``falwrap_call_duration_seconds{model, operation}``: call durations (histogram)

Metrics are per process, as Prometheus expects: with shared state (Redis, SQL) each
process counts the calls it made and the scraper adds them up.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falwrap.records import CallRecord

__all__ = ["DURATION_BUCKETS", "CallMetrics", "default_metrics", "observe_call"]

#: Histogram buckets in seconds, from a fast image (0.5 s) to a long video (10 min).
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class CallMetrics:
    """The falwrap metrics registered on one Prometheus registry. Thread-safe (prometheus_client is).

    Args:
        registry: A ``prometheus_client.CollectorRegistry``; the process-wide default when ``None``.

    Raises:
        ImportError: ``prometheus_client`` is not installed (``pip install 'falwrap[metrics]'``).
        ValueError: These metrics are already registered on ``registry``.
    """

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client

        reg = prometheus_client.REGISTRY if registry is None else registry
        self.calls = prometheus_client.Counter(
            "falwrap_calls", "Calls recorded by the falwrap ledger.", ["model", "operation", "outcome"], registry=reg
        )
        self.failures = prometheus_client.Counter(
            "falwrap_call_failures", "Failed calls by error code.", ["model", "error_code"], registry=reg
        )
        self.cost = prometheus_client.Counter(
            "falwrap_cost_usd", "Dollars spent on fal calls.", ["model"], registry=reg
        )
        self.duration = prometheus_client.Histogram(
            "falwrap_call_duration_seconds",
            "Wall time of fal calls.",
            ["model", "operation"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        # Each metric's child per label values, looked up once: prometheus_client's labels()
        # validates and locks on every call (about 5 us each, four times a call). The label
        # sets are few (models x operations x outcomes), so the cache stays small. Two threads
        # filling the same entry store the same child: labels() returns one per label set.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)  # the metrics live as long as self
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, rec: CallRecord) -> None:
        """Count one finished call.

        Args:
            rec: The call's record.
        """
        outcome = "success" if rec.success else "failure"
        self._child(self.calls, rec.model_id, rec.operation, outcome).inc()
        if not rec.success:
            self._child(self.failures, rec.model_id, rec.error_code or "UNKNOWN_ERROR").inc()
        if rec.cost_usd:
            self._child(self.cost, rec.model_id).inc(float(rec.cost_usd))
        self._child(self.duration, rec.model_id, rec.operation).observe(rec.duration_ms / 1000.0)


class _Default:
    """The lazily made process-wide metrics; ``unavailable`` once prometheus_client proved missing."""

    lock = threading.Lock()
    metrics: CallMetrics | None = None
    unavailable = False


def default_metrics() -> CallMetrics | None:
    """The process-wide metrics on the default registry, made on first use; ``None`` without prometheus_client.

    Thread-safe: the metrics are registered once however many threads ask.
    """
    if _Default.metrics is not None or _Default.unavailable:
        return _Default.metrics
    with _Default.lock:
        if _Default.metrics is None and not _Default.unavailable:
            try:
                _Default.metrics = CallMetrics()
            except ImportError:
                # Checked once: without the package every later record skips straight past.
                _Default.unavailable = True
    return _Default.metrics


def observe_call(rec: CallRecord) -> None:
    """Count a finished call in the default metrics; a no-op without ``prometheus_client``.

    Args:
        rec: The call's record.
    """
    metrics = default_metrics()
    if metrics is not None:
        metrics.observe(rec)
