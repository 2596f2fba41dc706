"""Tests for falwrap.ledger: CallRecord, CostLedger aggregates, budgets and reservations."""

from __future__ import annotations

import gc
import logging
import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from falwrap.errors import BudgetExceededError
from falwrap.aggregates import percentile
from falwrap.ledger import CallRecord, CostLedger, Ledger, Reservation, format_call_log, quantize_usd
from falwrap.observers import default_observers, notify
from tests.helpers.records import T0, rec, run_threads

UTC = timezone.utc


class FakeClock:
    """A settable clock for the ledger."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --- CallRecord ------------------------------------------------------------------------------------


def test_record_rejects_naive_timestamp() -> None:
    """A naive timestamp is refused: its UTC day would be a guess."""
    with pytest.raises(ValueError, match="timezone-aware"):
        rec(at=datetime(2025, 1, 1, 12, 0))


def test_record_rejects_float_and_negative_cost() -> None:
    """Money must be a non-negative Decimal; floats are a TypeError."""
    with pytest.raises(TypeError, match="Decimal"):
        CallRecord(T0, "m", "generate", 1, 0.1, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        rec("-0.01")
    with pytest.raises(ValueError, match="non-negative"):
        rec("NaN")


def test_record_rejects_bad_duration_and_model() -> None:
    """Negative or non-finite durations and empty model ids are refused."""
    with pytest.raises(ValueError, match="duration_ms"):
        rec(duration=-1)
    with pytest.raises(ValueError, match="duration_ms"):
        rec(duration=float("inf"))
    with pytest.raises(ValueError, match="model_id"):
        rec(model="")


def test_record_normalises_to_utc_and_micro_dollars() -> None:
    """Timestamps are stored in UTC and costs rounded to the micro-dollar."""
    plus2 = timezone(timedelta(hours=2))
    r = rec("0.0000004", at=datetime(2025, 1, 1, 1, 0, tzinfo=plus2))
    assert r.timestamp == datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    assert r.timestamp.tzinfo == UTC
    assert r.day == date(2024, 12, 31)
    assert r.cost_usd == Decimal("0") and r.cost_usd.as_tuple().exponent == -6
    assert rec("0.0250").cost_usd == Decimal("0.025")


def test_record_metadata_is_read_only_copy_and_round_trips() -> None:
    """Metadata is copied and read-only; to_dict/from_dict round-trips the record exactly."""
    meta = {"seed": 7}
    r = rec(metadata=meta, request_id="req-1", success=False, error_code="RATE_LIMIT")
    meta["seed"] = 8
    assert r.metadata["seed"] == 7
    with pytest.raises(TypeError):
        r.metadata["x"] = 1  # type: ignore[index]
    assert CallRecord.from_dict(r.to_dict()) == r
    assert hash(r) == hash(CallRecord.from_dict(r.to_dict()))


def test_quantize_usd_rejects_floats_and_rounds_half_even() -> None:
    """quantize_usd refuses floats and bools and rounds to six places, half to even."""
    assert quantize_usd(Decimal("0.0000025")) == Decimal("0.000002")
    assert quantize_usd(3) == Decimal("3.000000")
    with pytest.raises(TypeError):
        quantize_usd(0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        quantize_usd(True)


# --- Aggregates ------------------------------------------------------------------------------------


def test_concurrent_records_sum_exactly() -> None:
    """16 threads x 2,000 records of $0.003 sum to exactly $96.000, with bounded retained records."""
    ledger = CostLedger(max_records=1000, clock=FakeClock())
    start = threading.Barrier(16)

    def worker(_: int) -> None:
        start.wait()
        for _ in range(2000):
            ledger.record(rec("0.003"))

    run_threads(16, worker)
    assert ledger.daily_cost() == Decimal("96.000")
    assert ledger.daily_cost(T0.date()) == Decimal("96.000")
    stats = ledger.stats()
    assert stats["total_calls"] == 32000
    assert stats["successes"] == 32000
    assert stats["total_cost_usd"] == Decimal("96.000")
    assert len(ledger.records()) <= 1000
    assert len(ledger.records()) == 1000


def test_day_boundary_is_utc_with_injected_clock() -> None:
    """Records at 23:59:59.999 and 00:00:00 UTC land on different days; 'today' follows the clock."""
    before = datetime(2025, 6, 30, 23, 59, 59, 999000, tzinfo=UTC)
    after = datetime(2025, 7, 1, 0, 0, 0, tzinfo=UTC)
    clock = FakeClock(before)
    ledger = CostLedger(clock=clock)
    ledger.record(rec("1.5", at=before))
    ledger.record(rec("0.25", at=after))
    assert ledger.daily_cost() == Decimal("1.5")
    clock.now = after
    assert ledger.daily_cost() == Decimal("0.25")
    assert ledger.daily_cost(date(2025, 6, 30)) == Decimal("1.5")
    assert ledger.daily_cost(date(2025, 7, 1)) == Decimal("0.25")
    assert ledger.daily_cost(date(2025, 7, 2)) == Decimal("0")


def test_daily_cost_accepts_aware_datetime_as_its_utc_day() -> None:
    """An aware datetime given as the day means its UTC day; a naive one is refused."""
    ledger = CostLedger(clock=FakeClock())
    ledger.record(rec("2", at=datetime(2025, 1, 1, 23, 30, tzinfo=UTC)))
    tokyo = timezone(timedelta(hours=9))
    assert ledger.daily_cost(datetime(2025, 1, 2, 8, 0, tzinfo=tokyo)) == Decimal("2")
    with pytest.raises(ValueError, match="naive"):
        ledger.daily_cost(datetime(2025, 1, 1))


def test_day_totals_are_bounded() -> None:
    """Only the last max_days days of totals are kept; the oldest go first."""
    ledger = CostLedger(clock=FakeClock(), max_days=3)
    for d in range(5):
        ledger.record(rec("1", at=T0 + timedelta(days=d)))
    assert ledger.daily_cost(T0.date()) == Decimal("0")
    assert ledger.daily_cost((T0 + timedelta(days=1)).date()) == Decimal("0")
    assert ledger.daily_cost((T0 + timedelta(days=4)).date()) == Decimal("1")
    assert ledger.stats()["total_cost_usd"] == Decimal("5")


def test_stats_with_no_calls() -> None:
    """stats() on an empty ledger gives zero counts and None rates, without raising."""
    stats = CostLedger().stats()
    assert stats == {
        "total_calls": 0,
        "successes": 0,
        "failures": 0,
        "success_rate": None,
        "total_cost_usd": Decimal("0"),
        "avg_duration_ms": None,
        "p50_duration_ms": None,
        "p95_duration_ms": None,
        "by_model": {},
    }
    assert CostLedger().stats(model="nope")["success_rate"] is None


def test_stats_percentiles_and_by_model_on_known_data() -> None:
    """p50/p95 interpolate linearly (1..100 -> 50.5, 95.05); counters split by model."""
    ledger = CostLedger(clock=FakeClock())
    for ms in range(1, 101):
        ledger.record(rec("0.01", model="a", duration=ms, success=ms % 4 != 0, error_code=None if ms % 4 else "X"))
    ledger.record(rec("0.5", model="b", duration=7))
    stats = ledger.stats()
    assert stats["total_calls"] == 101
    assert stats["failures"] == 25
    assert stats["total_cost_usd"] == Decimal("1.5")
    a = stats["by_model"]["a"]
    assert a["p50_duration_ms"] == pytest.approx(50.5)
    assert a["p95_duration_ms"] == pytest.approx(95.05)
    assert a["avg_duration_ms"] == pytest.approx(50.5)
    assert a["success_rate"] == pytest.approx(0.75)
    assert a["total_cost_usd"] == Decimal("1.00")
    assert stats["by_model"]["b"]["p95_duration_ms"] == 7
    assert ledger.stats(model="b")["total_calls"] == 1
    assert set(ledger.stats(model="b")["by_model"]) == {"b"}
    assert ledger.by_model() == stats["by_model"]


def test_percentile_window_is_bounded_to_recent_calls() -> None:
    """p50/p95 come from the last duration_window calls, while counts cover every call."""
    ledger = CostLedger(clock=FakeClock(), duration_window=10)
    for ms in range(1000):
        ledger.record(rec(duration=ms))
    stats = ledger.stats()
    assert stats["total_calls"] == 1000
    assert stats["p50_duration_ms"] == pytest.approx(994.5)
    assert stats["avg_duration_ms"] == pytest.approx(499.5)


def test_percentile_helper_edges() -> None:
    """percentile() returns None for no data and the value itself for one point."""
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0], 0.5) == 1.5


def test_records_newest_first_with_limit() -> None:
    """records() lists the newest first; limit keeps the newest; the ring drops the oldest."""
    ledger = CostLedger(max_records=3, clock=FakeClock())
    for i in range(5):
        ledger.record(rec(duration=i))
    assert [r.duration_ms for r in ledger.records()] == [4, 3, 2]
    assert [r.duration_ms for r in ledger.records(limit=2)] == [4, 3]
    assert ledger.records(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        ledger.records(limit=-1)


# --- Budgets and reservations ----------------------------------------------------------------------


def test_budget_race_grants_exactly_what_fits() -> None:
    """8 threads racing reserve() on a budget for exactly 2 calls: 2 granted, 6 refused, spend within budget."""
    budget = Decimal("1.00")
    ledger = CostLedger(clock=FakeClock(), daily_budget_usd=budget)
    start = threading.Barrier(8)
    granted: list[Reservation] = []
    refused: list[BudgetExceededError] = []
    lock = threading.Lock()

    def worker(_: int) -> None:
        start.wait()
        try:
            hold = ledger.reserve(Decimal("0.50"), model_id="fal-ai/flux/dev")
        except BudgetExceededError as exc:
            with lock:
                refused.append(exc)
        else:
            with lock:
                granted.append(hold)

    run_threads(8, worker)
    assert len(granted) == 2
    assert len(refused) == 6
    assert all(e.budget == budget and e.estimate == Decimal("0.5") for e in refused)
    assert all(e.spent + e.reserved == Decimal("1.00") for e in refused)
    for hold in granted:
        ledger.record(rec("0.45"), reservation=hold)
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == Decimal("0.90")
    assert ledger.daily_cost() <= budget


def test_budget_error_names_spent_reserved_estimate_and_budget() -> None:
    """The refusal carries today's spend, open holds, the estimate, the budget and the model."""
    ledger = CostLedger(clock=FakeClock(), daily_budget_usd=Decimal("5"))
    ledger.record(rec("3"))
    hold = ledger.reserve(Decimal("1.5"))
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve(Decimal("0.75"), model_id="fal-ai/kling")
    err = info.value
    assert (err.spent, err.reserved, err.estimate, err.budget) == (
        Decimal("3"),
        Decimal("1.5"),
        Decimal("0.75"),
        Decimal("5"),
    )
    assert err.model_id == "fal-ai/kling"
    assert "$5.00" in str(err) and "fal-ai/kling" in str(err)
    assert ledger.reserved() == Decimal("1.5")
    hold.release()


def test_budget_counts_only_today() -> None:
    """Yesterday's spend does not count against today's budget."""
    clock = FakeClock(T0)
    ledger = CostLedger(clock=clock, daily_budget_usd=Decimal("1"))
    ledger.record(rec("1", at=T0))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.01"))
    clock.now = T0 + timedelta(days=1)
    ledger.reserve(Decimal("1")).release()


def test_no_budget_never_refuses_but_tracks_holds() -> None:
    """Without a budget reserve() always grants, and reserved() still shows calls in flight."""
    ledger = CostLedger(clock=FakeClock())
    hold = ledger.reserve(Decimal("1000000"))
    assert ledger.reserved() == Decimal("1000000")
    hold.release()
    assert ledger.reserved() == 0


def test_record_with_reservation_counts_cost_once() -> None:
    """record(rec, reservation=hold) adds the actual cost and ends the hold in one step."""
    ledger = CostLedger(clock=FakeClock(), daily_budget_usd=Decimal("1"))
    hold = ledger.reserve(Decimal("0.8"))
    ledger.record(rec("0.3"), reservation=hold)
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == Decimal("0.3")
    assert hold.state == "settled" and hold.actual_cost == Decimal("0.3")
    hold.settle(Decimal("0.9"))
    hold.release()
    assert hold.actual_cost == Decimal("0.3")
    assert ledger.daily_cost() == Decimal("0.3")
    ledger.reserve(Decimal("0.7")).release()


def test_settle_and_release_only_end_the_hold_and_are_idempotent() -> None:
    """settle() and release() end the hold once, never add spend, and repeat harmlessly."""
    ledger = CostLedger(clock=FakeClock())
    a = ledger.reserve(Decimal("2"))
    b = ledger.reserve(Decimal("3"))
    a.settle(Decimal("1.25"))
    a.settle(Decimal("1.25"))
    a.release()
    assert a.state == "settled" and a.actual_cost == Decimal("1.25")
    assert ledger.reserved() == Decimal("3")
    b.release()
    b.release()
    assert b.state == "released"
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == 0
    with pytest.raises(TypeError):
        ledger.reserve(Decimal("1")).settle(0.5)  # type: ignore[arg-type]


def test_context_manager_releases_on_exception_and_on_exit() -> None:
    """A with-block ends an unsettled hold whether it raises or not; record() inside still counts once."""
    ledger = CostLedger(clock=FakeClock(), daily_budget_usd=Decimal("1"))
    with pytest.raises(RuntimeError), ledger.reserve(Decimal("1")) as hold:
        raise RuntimeError("call failed")
    assert hold.state == "released"
    assert ledger.reserved() == 0
    with ledger.reserve(Decimal("1")) as hold:
        ledger.record(rec("0.2"), reservation=hold)
    assert hold.state == "settled"
    with ledger.reserve(Decimal("0.1")):
        pass
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == Decimal("0.2")


def test_reservation_from_another_ledger_is_refused() -> None:
    """record() refuses a reservation another ledger made, and records nothing."""
    one = CostLedger()
    two = CostLedger()
    hold = one.reserve(Decimal("1"))
    with pytest.raises(ValueError, match="another ledger"):
        two.record(rec(), reservation=hold)
    assert hold.state == "held"
    assert two.stats()["total_calls"] == 0


def test_dropped_reservation_is_freed_by_finalizer() -> None:
    """A reservation garbage-collected without settling frees its amount."""
    ledger = CostLedger(clock=FakeClock(), daily_budget_usd=Decimal("1"))
    hold = ledger.reserve(Decimal("1"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.01"))
    del hold
    gc.collect()
    assert ledger.reserved() == 0
    ledger.reserve(Decimal("1")).release()


def test_thread_dying_mid_call_frees_its_reservation() -> None:
    """A thread that reserves and then dies with an exception does not leak its hold."""
    ledger = CostLedger(clock=FakeClock(), daily_budget_usd=Decimal("1"))
    errors: list[BaseException] = []

    def call(_: int) -> None:
        ledger.reserve(Decimal("0.6"))
        raise RuntimeError("thread died mid-call")

    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment,arg-type]
    try:
        run_threads(1, call)
    finally:
        threading.excepthook = old_hook
    gc.collect()
    assert len(errors) == 1
    assert ledger.reserved() == 0
    ledger.reserve(Decimal("1")).release()


def test_reservation_lapses_after_ttl() -> None:
    """A hold older than reservation_ttl (per the clock) stops counting; settling it later is harmless."""
    clock = FakeClock()
    ledger = CostLedger(clock=clock, daily_budget_usd=Decimal("1"), reservation_ttl=60)
    hold = ledger.reserve(Decimal("1"))
    clock.now += timedelta(seconds=59)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.5"))
    clock.now += timedelta(seconds=2)
    assert ledger.reserved() == 0
    fresh = ledger.reserve(Decimal("0.5"))
    ledger.record(rec("0.1", at=clock.now), reservation=hold)
    assert ledger.reserved() == Decimal("0.5")
    assert ledger.daily_cost() == Decimal("0.1")
    fresh.release()


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
