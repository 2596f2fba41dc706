"""Tests for what is specific to CostLedger (its constructor and bounds) and to the ledger's helpers.

Everything a ledger does on any store (sums, days, stats, budgets, reservations)
is in the contract suite, ``tests/contract/test_ledger.py``, which runs it over
the memory journal that CostLedger uses.
"""

from __future__ import annotations

import logging
import warnings
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from falwrap.aggregates import percentile
from falwrap.backends.memory import MemoryJournal
from falwrap.ledger import CostLedger, Ledger, format_call_log
from falwrap.observers import default_observers, notify
from tests.helpers.records import T0, rec


class FakeClock:
    """A settable clock for the ledger."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_day_totals_are_bounded() -> None:
    """Only the last max_days days of totals are kept; the oldest go first."""
    ledger = CostLedger(clock=FakeClock(), max_days=3)
    for d in range(5):
        ledger.record(rec("1", at=T0 + timedelta(days=d)))
    assert ledger.daily_cost(T0.date()) == Decimal("0")
    assert ledger.daily_cost((T0 + timedelta(days=1)).date()) == Decimal("0")
    assert ledger.daily_cost((T0 + timedelta(days=4)).date()) == Decimal("1")
    assert ledger.stats()["total_cost_usd"] == Decimal("5")


def test_records_ring_keeps_the_newest_max_records() -> None:
    """The record ring holds max_records: the oldest go first, counts still cover every call."""
    ledger = CostLedger(max_records=3, clock=FakeClock())
    for i in range(5):
        ledger.record(rec(duration=i))
    assert ledger.max_records == 3
    assert [r.duration_ms for r in ledger.records()] == [4, 3, 2]
    assert [r.duration_ms for r in ledger.records(limit=2)] == [4, 3]
    assert ledger.stats()["total_calls"] == 5


def test_duration_window_is_configurable() -> None:
    """CostLedger(duration_window=10) computes p50/p95 over the last 10 calls only."""
    ledger = CostLedger(clock=FakeClock(), duration_window=10)
    for ms in range(1000):
        ledger.record(rec(duration=ms))
    stats = ledger.stats()
    assert stats["total_calls"] == 1000
    assert stats["p50_duration_ms"] == pytest.approx(994.5)
    assert stats["avg_duration_ms"] == pytest.approx(499.5)


def test_positional_arguments_keep_working() -> None:
    """CostLedger(max_records, clock, daily_budget_usd) keeps its positional order, over a MemoryJournal."""
    clock = FakeClock()
    ledger = CostLedger(50, clock, Decimal("2"))
    assert ledger.max_records == 50
    assert ledger.clock is clock
    assert ledger.daily_budget_usd == Decimal("2")
    assert isinstance(ledger.journal, MemoryJournal)


def test_metrics_argument_is_deprecated_and_ignored() -> None:
    """CostLedger(metrics=...) raises a DeprecationWarning; without the argument nothing warns."""
    with pytest.warns(DeprecationWarning, match="metrics"):
        CostLedger(metrics=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CostLedger()


def test_percentile_helper_edges() -> None:
    """percentile() returns None for no data and the value itself for one point."""
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0], 0.5) == 1.5


def test_invalid_configuration_is_refused() -> None:
    """A float budget, a zero ring size and a non-positive TTL are refused at construction."""
    with pytest.raises(TypeError):
        CostLedger(daily_budget_usd=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_records"):
        CostLedger(max_records=0)
    with pytest.raises(ValueError, match="reservation_ttl"):
        CostLedger(reservation_ttl=0)
    assert CostLedger(daily_budget_usd=Decimal("10")).daily_budget_usd == Decimal("10")


def test_cost_ledger_satisfies_ledger_protocol() -> None:
    """CostLedger is a Ledger, the interface the client is written against."""
    ledger: Ledger = CostLedger()
    assert isinstance(ledger, Ledger)


# --- The log line ----------------------------------------------------------------------------------


def test_log_observer_writes_one_info_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    """The log observer writes one INFO line on 'falwrap' per record, with structured extra fields."""
    with caplog.at_level(logging.INFO, logger="falwrap"):
        notify(default_observers(), rec("0.025", duration=3512, request_id="req-9"))
        notify(default_observers(), rec("0", duration=120.4, success=False, error_code="RATE_LIMIT"))
    lines = [r for r in caplog.records if r.name == "falwrap"]
    assert [r.getMessage() for r in lines] == [
        "[falwrap] generate fal-ai/flux/dev SUCCESS (3512 ms, $0.0250)",
        "[falwrap] generate fal-ai/flux/dev FAILED RATE_LIMIT (120 ms, $0.0000)",
    ]
    assert all(r.levelno == logging.INFO for r in lines)
    first: Any = lines[0]
    assert first.falwrap_model == "fal-ai/flux/dev"
    assert first.falwrap_cost_usd == "0.025000"
    assert first.falwrap_request_id == "req-9"
    assert lines[1].falwrap_error_code == "RATE_LIMIT"  # type: ignore[attr-defined]


def test_log_line_keeps_sub_cent_precision() -> None:
    """Costs finer than four places are shown in full rather than rounded to $0.0000."""
    template, args, _ = format_call_log(rec("0.000123"))
    assert template % args == "[falwrap] generate fal-ai/flux/dev SUCCESS (100 ms, $0.000123)"
