"""Tests for falwrap.metrics: Prometheus counters on record, a no-op without prometheus_client."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from falwrap import FalClient, FalConfig, InvalidInputError, metrics
from falwrap.ledger import CallRecord, CostLedger
from falwrap.observers import default_observers, notify

prometheus_client = pytest.importorskip("prometheus_client")


def rec(model: str, *, success: bool = True, cost: str = "0.025", duration: float = 3512) -> CallRecord:
    return CallRecord(
        timestamp=datetime(2025, 1, 1, tzinfo=timezone.utc),
        model_id=model,
        operation="generate",
        duration_ms=duration,
        cost_usd=Decimal(cost),
        success=success,
        error_code=None if success else "RATE_LIMIT",
    )


def test_call_metrics_count_calls_failures_cost_and_duration() -> None:
    """CallMetrics counts calls by outcome, failures by code, dollars and durations in seconds."""
    registry = prometheus_client.CollectorRegistry()
    m = metrics.CallMetrics(registry)
    m.observe(rec("a"))
    m.observe(rec("a", success=False, cost="0", duration=120))
    value = registry.get_sample_value
    assert value("falwrap_calls_total", {"model": "a", "operation": "generate", "outcome": "success"}) == 1
    assert value("falwrap_calls_total", {"model": "a", "operation": "generate", "outcome": "failure"}) == 1
    assert value("falwrap_call_failures_total", {"model": "a", "error_code": "RATE_LIMIT"}) == 1
    assert value("falwrap_cost_usd_total", {"model": "a"}) == pytest.approx(0.025)
    assert value("falwrap_call_duration_seconds_count", {"model": "a", "operation": "generate"}) == 2
    assert value("falwrap_call_duration_seconds_sum", {"model": "a", "operation": "generate"}) == pytest.approx(3.632)


def test_the_metrics_observer_updates_default_metrics_and_the_ledger_only_stores() -> None:
    """The client's default observers update the process-wide metrics; CostLedger.record() alone does not."""
    value = prometheus_client.REGISTRY.get_sample_value
    labels = {"model": "metrics-test/model", "operation": "generate", "outcome": "success"}
    before = value("falwrap_calls_total", labels) or 0
    notify(default_observers(), rec("metrics-test/model"))
    assert value("falwrap_calls_total", labels) == before + 1
    CostLedger().record(rec("metrics-test/model"))
    assert value("falwrap_calls_total", labels) == before + 1
    assert metrics.default_metrics() is metrics.default_metrics()


def test_a_client_reports_each_call_to_its_observers(fake_fal: Any) -> None:
    """Every call ends in one record told to the observers given to the client, after it is stored."""
    seen: list[CallRecord] = []
    config = FalConfig(api_key=fake_fal.key, base_url=fake_fal.url)
    with FalClient(config, observers=[seen.append]) as client:
        result = client.image("a cat")
        with pytest.raises(InvalidInputError):
            client.image("a cat", num_images=9)
        assert [r.success for r in seen] == [True, False]
        assert seen[0].request_id == result.request_id
        assert seen[0] in client.ledger.records()


def test_observe_is_a_no_op_without_prometheus_client() -> None:
    """With prometheus_client unimportable, the metrics observer and recording still work and metrics are None."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from datetime import datetime, timezone; from decimal import Decimal\n"
        "from falwrap import metrics; from falwrap.ledger import CallRecord, CostLedger\n"
        "from falwrap.observers import metrics_observer\n"
        "rec = CallRecord(datetime.now(timezone.utc), 'm', 'generate', 1, Decimal('1'), True)\n"
        "metrics_observer(rec); CostLedger().record(rec)\n"
        "assert metrics.default_metrics() is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_import_does_not_load_prometheus_or_redis() -> None:
    """Importing falwrap, its ledgers and journals (RedisLedger included) loads neither prometheus_client nor redis."""
    code = (
        "import sys, falwrap, falwrap.ledger, falwrap.metrics, falwrap.backends.redis_ledger\n"
        "import falwrap.backends.redis_journal, falwrap.backends.memory\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
