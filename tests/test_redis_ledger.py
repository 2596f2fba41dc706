"""Tests for falwrap.backends.redis_ledger.RedisLedger against the real Redis on 127.0.0.1 (db 15)."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from falwrap.backends.redis_ledger import RedisLedger
from falwrap.errors import BudgetExceededError
from falwrap.ledger import Ledger, Reservation
from tests.helpers.records import T0, rec, run_threads

pytestmark = pytest.mark.redis

UTC = timezone.utc


@pytest.fixture
def make(redis_client: Any, redis_namespace: str) -> Callable[..., RedisLedger]:
    """Build RedisLedgers on the test namespace with a fixed clock and no Prometheus updates."""

    def build(**kwargs: Any) -> RedisLedger:
        kwargs.setdefault("clock", lambda: T0)
        kwargs.setdefault("metrics", False)
        return RedisLedger(redis_client, redis_namespace, **kwargs)

    return build


def test_concurrent_records_sum_exactly(make: Callable[..., RedisLedger]) -> None:
    """16 threads recording $0.003 calls sum to the exact Decimal, with the record list capped."""
    ledger = make(max_records=100)
    start = threading.Barrier(16)

    def worker(_: int) -> None:
        start.wait()
        for _ in range(250):
            ledger.record(rec("0.003"))

    run_threads(16, worker)
    assert ledger.daily_cost() == Decimal("12.000")
    stats = ledger.stats()
    assert stats["total_calls"] == 4000
    assert stats["total_cost_usd"] == Decimal("12.000")
    assert len(ledger.records()) == 100


def test_two_instances_share_state(make: Callable[..., RedisLedger]) -> None:
    """Two RedisLedgers on one namespace (as two processes would be) see each other's calls and holds."""
    one, two = make(), make()
    one.record(rec("1.25", model="a"))
    two.record(rec("0.75", model="b"))
    hold = one.reserve(Decimal("2"))
    assert one.daily_cost() == two.daily_cost() == Decimal("2")
    assert two.stats()["total_calls"] == 2
    assert set(two.by_model()) == {"a", "b"}
    assert two.reserved() == Decimal("2")
    hold.release()
    assert two.reserved() == 0


def test_day_boundary_is_utc_with_injected_clock(make: Callable[..., RedisLedger]) -> None:
    """Records at 23:59:59.999 and 00:00:00 UTC land on different days; 'today' follows the clock."""
    before = datetime(2025, 6, 30, 23, 59, 59, 999000, tzinfo=UTC)
    after = datetime(2025, 7, 1, 0, 0, 0, tzinfo=UTC)
    now = [before]
    ledger = make(clock=lambda: now[0])
    ledger.record(rec("1.5", at=before))
    ledger.record(rec("0.25", at=after))
    assert ledger.daily_cost() == Decimal("1.5")
    now[0] = after
    assert ledger.daily_cost() == Decimal("0.25")
    assert ledger.daily_cost(date(2025, 6, 30)) == Decimal("1.5")
    assert ledger.daily_cost(date(2025, 7, 2)) == Decimal("0")


def test_day_totals_expire(make: Callable[..., RedisLedger], redis_client: Any, redis_namespace: str) -> None:
    """Each day's hash carries the configured TTL so old days clean themselves up."""
    ledger = make(day_ttl=3600)
    ledger.record(rec())
    ttl = redis_client.ttl(f"{redis_namespace}:day:{T0.date().isoformat()}")
    assert 3500 < ttl <= 3600


def test_stats_with_no_calls(make: Callable[..., RedisLedger]) -> None:
    """stats() on an empty namespace gives zero counts and None rates, without raising."""
    stats = make().stats()
    assert stats["total_calls"] == 0
    assert stats["success_rate"] is None
    assert stats["p50_duration_ms"] is None and stats["p95_duration_ms"] is None
    assert stats["by_model"] == {}
    assert make().stats(model="nope")["success_rate"] is None


def test_stats_percentiles_and_by_model_on_known_data(make: Callable[..., RedisLedger]) -> None:
    """p50/p95 over known durations (1..100 -> 50.5, 95.05), failures and costs split by model."""
    ledger = make()
    for ms in range(1, 101):
        ledger.record(rec("0.01", model="a", duration=ms, success=ms % 4 != 0, error_code=None if ms % 4 else "X"))
    ledger.record(rec("0.5", model="fal-ai/b:v2", duration=7.5))
    stats = ledger.stats()
    assert stats["total_calls"] == 101
    assert stats["failures"] == 25
    assert stats["total_cost_usd"] == Decimal("1.5")
    a = stats["by_model"]["a"]
    assert a["p50_duration_ms"] == pytest.approx(50.5)
    assert a["p95_duration_ms"] == pytest.approx(95.05)
    assert a["success_rate"] == pytest.approx(0.75)
    assert a["total_cost_usd"] == Decimal("1")
    b = ledger.stats(model="fal-ai/b:v2")
    assert b["total_calls"] == 1 and b["p50_duration_ms"] == 7.5
    assert set(b["by_model"]) == {"fal-ai/b:v2"}


def test_percentile_window_is_capped(make: Callable[..., RedisLedger]) -> None:
    """Durations for p50/p95 come from a capped list of the most recent calls."""
    ledger = make(duration_window=10)
    for ms in range(50):
        ledger.record(rec(duration=ms))
    stats = ledger.stats()
    assert stats["total_calls"] == 50
    assert stats["p50_duration_ms"] == pytest.approx(44.5)
    assert stats["avg_duration_ms"] == pytest.approx(24.5)


def test_records_round_trip_newest_first(make: Callable[..., RedisLedger]) -> None:
    """records() returns equal CallRecords, newest first, honouring limit and max_records."""
    ledger = make(max_records=3)
    originals = [rec(duration=i, request_id=f"r{i}", metadata={"i": i}) for i in range(5)]
    for r in originals:
        ledger.record(r)
    assert ledger.records() == originals[:1:-1]
    assert ledger.records(limit=1) == [originals[4]]
    assert ledger.records(limit=0) == []


def test_budget_race_across_threads(make: Callable[..., RedisLedger]) -> None:
    """8 threads racing reserve() on a budget for exactly 2: 2 granted, 6 refused, spend within budget."""
    budget = Decimal("1.00")
    ledger = make(daily_budget_usd=budget)
    start = threading.Barrier(8)
    granted: list[Reservation] = []
    refused: list[BudgetExceededError] = []

    def worker(_: int) -> None:
        start.wait()
        try:
            granted.append(ledger.reserve(Decimal("0.50"), model_id="m"))
        except BudgetExceededError as exc:
            refused.append(exc)

    run_threads(8, worker)
    assert (len(granted), len(refused)) == (2, 6)
    assert all(e.spent + e.reserved == budget and e.estimate == Decimal("0.5") for e in refused)
    for hold in granted:
        ledger.record(rec("0.5"), reservation=hold)
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == budget


def _reserve_in_process(url: str, namespace: str, start: Any, done: Any, results: Any) -> None:
    import redis

    client = redis.Redis.from_url(url)
    ledger = RedisLedger(client, namespace, daily_budget_usd=Decimal("1.00"), clock=lambda: T0, metrics=False)
    outcomes: list[str] = []
    holds: list[Reservation] = []
    threads_ready = threading.Barrier(8)

    def worker() -> None:
        threads_ready.wait()
        try:
            holds.append(ledger.reserve(Decimal("0.10")))
            outcomes.append("granted")
        except BudgetExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    start.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(outcomes)
    # Hold on until every process has tried: an early release would free budget for a late process.
    done.wait()
    for hold in holds:
        hold.release()


def test_budget_race_across_processes(redis_url: str, redis_namespace: str) -> None:
    """4 processes x 8 threads on one RedisLedger with a budget for exactly 10 holds: exactly 10 granted."""
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(4), ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_in_process, args=(redis_url, redis_namespace, start, done, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = [o for _ in procs for o in results.get(timeout=20)]
    for p in procs:
        p.join(timeout=20)
        assert p.exitcode == 0
    assert len(outcomes) == 32
    assert outcomes.count("granted") == 10
    assert outcomes.count("refused") == 22


def test_budget_error_names_spent_reserved_estimate_and_budget(make: Callable[..., RedisLedger]) -> None:
    """The refusal carries today's spend, open holds, the estimate and the budget."""
    ledger = make(daily_budget_usd=Decimal("5"))
    ledger.record(rec("3"))
    hold = ledger.reserve(Decimal("1.5"))
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve(Decimal("0.75"), model_id="fal-ai/kling")
    err = info.value
    assert (err.spent, err.reserved, err.estimate, err.budget, err.model_id) == (
        Decimal("3"),
        Decimal("1.5"),
        Decimal("0.75"),
        Decimal("5"),
        "fal-ai/kling",
    )
    hold.release()


def test_no_budget_never_refuses(make: Callable[..., RedisLedger]) -> None:
    """Without a budget reserve() always grants, and the hold is still visible."""
    ledger = make()
    hold = ledger.reserve(Decimal("1000000"))
    assert ledger.reserved() == Decimal("1000000")
    hold.release()
    assert ledger.reserved() == 0


def test_record_with_reservation_counts_cost_once(make: Callable[..., RedisLedger]) -> None:
    """record(rec, reservation=hold) adds the actual cost and removes the hold in one script."""
    ledger = make(daily_budget_usd=Decimal("1"))
    with ledger.reserve(Decimal("0.8")) as hold:
        ledger.record(rec("0.3"), reservation=hold)
    assert hold.state == "settled"
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == Decimal("0.3")
    ledger.reserve(Decimal("0.7")).release()


def test_context_manager_releases_on_exception(make: Callable[..., RedisLedger]) -> None:
    """An exception inside the with-block releases the hold in Redis."""
    ledger = make(daily_budget_usd=Decimal("1"))
    with pytest.raises(RuntimeError), ledger.reserve(Decimal("1")):
        raise RuntimeError("call failed")
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == 0


def test_dropped_reservation_is_freed(make: Callable[..., RedisLedger]) -> None:
    """A reservation garbage-collected without settling is removed from Redis on the next ledger call."""
    ledger = make(daily_budget_usd=Decimal("1"))
    hold = ledger.reserve(Decimal("1"))
    del hold
    gc.collect()
    assert ledger.reserved() == 0
    ledger.reserve(Decimal("1")).release()


def test_reservation_expires_after_ttl(make: Callable[..., RedisLedger]) -> None:
    """A hold whose owner never ends it (a crashed process) lapses after reservation_ttl."""
    crashed = make(daily_budget_usd=Decimal("1"), reservation_ttl=0.3)
    survivor = make(daily_budget_usd=Decimal("1"))
    hold = crashed.reserve(Decimal("1"))
    with pytest.raises(BudgetExceededError):
        survivor.reserve(Decimal("0.5"))
    time.sleep(0.45)
    assert survivor.reserved() == 0
    survivor.reserve(Decimal("0.5")).release()
    hold.release()


def test_bookkeeping_keys_outlive_the_longest_hold(
    make: Callable[..., RedisLedger], redis_client: Any, redis_namespace: str
) -> None:
    """A short-TTL hold never shortens the life of the holds keys below a longer hold's expiry."""
    long_hold = make(reservation_ttl=600).reserve(Decimal("1"))
    short_hold = make(reservation_ttl=1).reserve(Decimal("1"))
    assert redis_client.pttl(f"{redis_namespace}:holds") > 600_000
    short_hold.release()
    long_hold.release()


def test_redis_ledger_satisfies_ledger_protocol(make: Callable[..., RedisLedger]) -> None:
    """RedisLedger is a Ledger, interchangeable with CostLedger for the client."""
    ledger: Ledger = make()
    assert isinstance(ledger, Ledger)


def test_invalid_configuration_is_refused(redis_client: Any) -> None:
    """An empty namespace and a float budget are refused at construction."""
    with pytest.raises(ValueError, match="namespace"):
        RedisLedger(redis_client, "")
    with pytest.raises(TypeError):
        RedisLedger(redis_client, "ns", daily_budget_usd=1.0)  # type: ignore[arg-type]


def test_decoded_responses_client_works(redis_url: str, redis_namespace: str) -> None:
    """A client built with decode_responses=True gives the same results."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ledger = RedisLedger(client, redis_namespace, clock=lambda: T0, metrics=False)
        ledger.record(rec("0.25", duration=10))
        assert ledger.daily_cost() == Decimal("0.25")
        assert ledger.stats()["p50_duration_ms"] == 10
        assert ledger.records()[0].cost_usd == Decimal("0.25")
    finally:
        client.close()


def test_record_logs_the_shared_line(make: Callable[..., RedisLedger], caplog: pytest.LogCaptureFixture) -> None:
    """RedisLedger writes the same INFO line as CostLedger for each record."""
    with caplog.at_level(logging.INFO, logger="falwrap"):
        make().record(rec("0", duration=120, success=False, error_code="RATE_LIMIT"))
    assert [r.getMessage() for r in caplog.records if r.name == "falwrap"] == [
        "[falwrap] generate fal-ai/flux/dev FAILED RATE_LIMIT (120 ms, $0.0000)"
    ]


def test_records_count_against_their_own_day(make: Callable[..., RedisLedger]) -> None:
    """A record is added to its timestamp's UTC day, whatever the clock says."""
    ledger = make()
    ledger.record(rec("2", at=T0 - timedelta(days=1)))
    assert ledger.daily_cost() == 0
    assert ledger.daily_cost(T0.date() - timedelta(days=1)) == Decimal("2")
