"""The ledger contract: a JournalLedger over every store (memory, SQLite, PostgreSQL, Redis) behaves the same.

``CostLedger`` and ``RedisLedger`` are this ledger over the memory and Redis
journals; what is specific to one of them (constructor arguments, key expiry)
is tested in ``tests/test_ledger.py`` and ``tests/test_redis_ledger.py``.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import queue
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from falwrap.errors import BudgetExceededError
from falwrap.journal import Journal
from falwrap.ledger import JournalLedger, Ledger, Reservation
from tests.contract.stores import StoreFactory
from tests.helpers.records import T0, rec, run_threads

UTC = timezone.utc

#: Records per thread in the exact-sum case: the in-process store takes the heavier load.
RECORDS_PER_THREAD = {"memory": 2000, "sqlite": 250, "postgresql": 250, "redis": 250}

#: How many recent durations every store's percentiles use by default.
DURATION_WINDOW = 1000


class FakeClock:
    """A settable clock for the ledger."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ledger_on(store: StoreFactory, **kwargs: Any) -> JournalLedger:
    """A ledger over a new journal instance of ``store``, on a fixed clock unless one is given."""
    kwargs.setdefault("clock", FakeClock())
    return JournalLedger(store.journal(), **kwargs)


# --- Aggregates ------------------------------------------------------------------------------------


def test_concurrent_records_sum_exactly(store: StoreFactory) -> None:
    """16 threads recording $0.003 calls sum to the exact Decimal, on both instances of a shared store."""
    per_thread = RECORDS_PER_THREAD[store.kind]
    ledgers = [ledger_on(store), ledger_on(store)]
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(per_thread):
            ledgers[i % 2].record(rec("0.003"))

    run_threads(16, worker)
    total = Decimal("0.003") * 16 * per_thread
    for ledger in ledgers:
        assert ledger.daily_cost() == total
        assert ledger.daily_cost(T0.date()) == total
        stats = ledger.stats()
        assert stats["total_calls"] == 16 * per_thread
        assert stats["successes"] == 16 * per_thread
        assert stats["total_cost_usd"] == total
    newest = ledgers[0].records(limit=100)
    assert len(newest) == 100
    assert {r.cost_usd for r in newest} == {Decimal("0.003")}


def test_two_instances_share_state(store: StoreFactory) -> None:
    """Two ledgers on one shared store (as two processes would be) see each other's calls and holds."""
    if not store.shared:
        pytest.skip("memory: one process, one instance")
    one, two = ledger_on(store), ledger_on(store)
    one.record(rec("1.25", model="a"))
    two.record(rec("0.75", model="b"))
    hold = one.reserve(Decimal("2"))
    assert one.daily_cost() == two.daily_cost() == Decimal("2")
    assert two.stats()["total_calls"] == 2
    assert set(two.by_model()) == {"a", "b"}
    assert two.reserved() == Decimal("2")
    hold.release()
    assert two.reserved() == 0


def test_day_boundary_is_utc_with_injected_clock(store: StoreFactory) -> None:
    """Records at 23:59:59.999 and 00:00:00 UTC land on different days; 'today' follows the clock."""
    before = datetime(2025, 6, 30, 23, 59, 59, 999000, tzinfo=UTC)
    after = datetime(2025, 7, 1, 0, 0, 0, tzinfo=UTC)
    clock = FakeClock(before)
    ledger = ledger_on(store, clock=clock)
    ledger.record(rec("1.5", at=before))
    ledger.record(rec("0.25", at=after))
    assert ledger.daily_cost() == Decimal("1.5")
    clock.now = after
    assert ledger.daily_cost() == Decimal("0.25")
    assert ledger.daily_cost(date(2025, 6, 30)) == Decimal("1.5")
    assert ledger.daily_cost(date(2025, 7, 1)) == Decimal("0.25")
    assert ledger.daily_cost(date(2025, 7, 2)) == Decimal("0")


def test_daily_cost_accepts_aware_datetime_as_its_utc_day(store: StoreFactory) -> None:
    """An aware datetime given as the day means its UTC day; a naive one is refused."""
    ledger = ledger_on(store)
    ledger.record(rec("2", at=datetime(2025, 1, 1, 23, 30, tzinfo=UTC)))
    tokyo = timezone(timedelta(hours=9))
    assert ledger.daily_cost(datetime(2025, 1, 2, 8, 0, tzinfo=tokyo)) == Decimal("2")
    with pytest.raises(ValueError, match="naive"):
        ledger.daily_cost(datetime(2025, 1, 1))


def test_records_count_against_their_own_day(store: StoreFactory) -> None:
    """A record is added to its timestamp's UTC day, whatever the clock says."""
    ledger = ledger_on(store)
    ledger.record(rec("2", at=T0 - timedelta(days=1)))
    assert ledger.daily_cost() == 0
    assert ledger.daily_cost(T0.date() - timedelta(days=1)) == Decimal("2")


def test_every_record_counts_even_with_a_repeated_request_id(store: StoreFactory) -> None:
    """record() counts each record it is given on every store; a job is counted once by the journal, not here."""
    ledger = ledger_on(store)
    ledger.record(rec("0.025", request_id="req-1"))
    ledger.record(rec("0.025", request_id="req-1"))
    stats = ledger.stats()
    assert stats["total_calls"] == 2
    assert stats["successes"] == 2
    assert ledger.daily_cost() == Decimal("0.05")


def test_stats_with_no_calls(store: StoreFactory) -> None:
    """stats() on an empty store gives zero counts and None rates, without raising."""
    ledger = ledger_on(store)
    assert ledger.stats() == {
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
    assert ledger.stats(model="nope")["success_rate"] is None
    assert ledger.by_model() == {}


def test_stats_percentiles_and_by_model_on_known_data(store: StoreFactory) -> None:
    """p50/p95 interpolate linearly (1..100 -> 50.5, 95.05); counters and costs split by model."""
    ledger = ledger_on(store)
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
    assert a["avg_duration_ms"] == pytest.approx(50.5)
    assert a["success_rate"] == pytest.approx(0.75)
    assert a["total_cost_usd"] == Decimal("1.00")
    assert stats["by_model"]["fal-ai/b:v2"]["p95_duration_ms"] == 7.5
    b = ledger.stats(model="fal-ai/b:v2")
    assert b["total_calls"] == 1
    assert b["p50_duration_ms"] == 7.5
    assert set(b["by_model"]) == {"fal-ai/b:v2"}
    assert ledger.by_model() == stats["by_model"]


def test_percentile_window_is_bounded_to_recent_calls(store: StoreFactory) -> None:
    """p50/p95 come from the last 1,000 calls (every store's window), while counts and averages cover all."""
    ledger = ledger_on(store)
    calls = DURATION_WINDOW + 100
    for ms in range(calls):
        ledger.record(rec(duration=ms))
    stats = ledger.stats()
    assert stats["total_calls"] == calls
    # The window holds 100..1099.
    assert stats["p50_duration_ms"] == pytest.approx(599.5)
    assert stats["p95_duration_ms"] == pytest.approx(1049.05)
    assert stats["avg_duration_ms"] == pytest.approx(549.5)
    assert stats["by_model"]["fal-ai/flux/dev"]["p50_duration_ms"] == pytest.approx(599.5)


def test_records_round_trip_newest_first_with_limit(store: StoreFactory) -> None:
    """records() returns equal CallRecords (request id, metadata) newest first; limit keeps the newest."""
    ledger = ledger_on(store)
    originals = [rec(duration=i, request_id=f"r{i}", metadata={"i": i, "tag": "ü"}) for i in range(5)]
    for r in originals:
        ledger.record(r)
    assert ledger.records() == originals[::-1]
    assert [r.duration_ms for r in ledger.records(limit=2)] == [4, 3]
    assert ledger.records(limit=1) == [originals[4]]
    assert ledger.records(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        ledger.records(limit=-1)


def test_record_only_stores_and_writes_no_log_line(store: StoreFactory, caplog: pytest.LogCaptureFixture) -> None:
    """record() on any store writes no log line: the client's observers write it once per call."""
    with caplog.at_level(logging.INFO, logger="falwrap"):
        ledger_on(store).record(rec("0", duration=120, success=False, error_code="RATE_LIMIT"))
    assert [r for r in caplog.records if r.name == "falwrap"] == []


# --- Budgets and reservations ----------------------------------------------------------------------


def test_budget_race_grants_exactly_what_fits(store: StoreFactory) -> None:
    """8 threads on two ledgers racing reserve() on a budget for exactly 2 calls: 2 granted, 6 refused."""
    budget = Decimal("1.00")
    ledgers = [ledger_on(store, daily_budget_usd=budget), ledger_on(store, daily_budget_usd=budget)]
    start = threading.Barrier(8)
    granted: list[tuple[JournalLedger, Reservation]] = []
    refused: list[BudgetExceededError] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        start.wait()
        ledger = ledgers[i % 2]
        try:
            hold = ledger.reserve(Decimal("0.50"), model_id="fal-ai/flux/dev")
        except BudgetExceededError as exc:
            with lock:
                refused.append(exc)
        else:
            with lock:
                granted.append((ledger, hold))

    run_threads(8, worker)
    assert len(granted) == 2
    assert len(refused) == 6
    assert all(e.budget == budget and e.estimate == Decimal("0.5") for e in refused)
    assert all(e.spent + e.reserved == Decimal("1.00") for e in refused)
    for ledger, hold in granted:
        ledger.record(rec("0.45"), reservation=hold)
    assert ledgers[0].reserved() == 0
    assert ledgers[1].daily_cost() == Decimal("0.90")
    assert ledgers[0].daily_cost() <= budget


def _reserve_in_process(url: str, namespace: str, start: Any, done: Any, results: Any) -> None:
    from falwrap.backends import open_store

    store = open_store(url, namespace=namespace)
    ledger = JournalLedger(store.journal, daily_budget_usd=Decimal("1.00"), clock=lambda: T0)
    outcomes: list[str] = []
    holds: list[Reservation] = []
    lock = threading.Lock()
    threads_ready = threading.Barrier(8)

    def worker() -> None:
        threads_ready.wait()
        try:
            hold = ledger.reserve(Decimal("0.10"))
        except BudgetExceededError:
            outcome = "refused"
        else:
            outcome = "granted"
            with lock:
                holds.append(hold)
        with lock:
            outcomes.append(outcome)

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
    store.close()


def test_budget_race_across_processes(store: StoreFactory) -> None:
    """4 processes x 8 threads on one shared store with a budget for exactly 10 holds: exactly 10 granted."""
    if not store.shared:
        pytest.skip("memory: one process")
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(4), ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_in_process, args=(store.url, store.namespace, start, done, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    outcomes: list[str] = []
    deadline = time.monotonic() + 60
    for _ in procs:
        # Poll, so that a child that crashed fails the test at once rather than after the deadline.
        while True:
            try:
                outcomes += results.get(timeout=0.5)
                break
            except queue.Empty:
                crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not crashed, f"a child process failed (exit codes {crashed})"
                assert time.monotonic() < deadline, "the child processes did not answer within 60 s"
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(outcomes) == 32
    assert outcomes.count("granted") == 10
    assert outcomes.count("refused") == 22
    assert ledger_on(store).reserved() == 0


def test_budget_error_names_spent_reserved_estimate_and_budget(store: StoreFactory) -> None:
    """The refusal carries today's spend, open holds, the estimate, the budget and the model."""
    ledger = ledger_on(store, daily_budget_usd=Decimal("5"))
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


def test_budget_counts_only_today(store: StoreFactory) -> None:
    """Yesterday's spend does not count against today's budget."""
    clock = FakeClock(T0)
    ledger = ledger_on(store, clock=clock, daily_budget_usd=Decimal("1"))
    ledger.record(rec("1", at=T0))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.01"))
    clock.now = T0 + timedelta(days=1)
    ledger.reserve(Decimal("1")).release()


def test_no_budget_never_refuses_but_tracks_holds(store: StoreFactory) -> None:
    """Without a budget reserve() always grants, and reserved() still shows calls in flight."""
    ledger = ledger_on(store)
    hold = ledger.reserve(Decimal("1000000"))
    assert ledger.reserved() == Decimal("1000000")
    hold.release()
    assert ledger.reserved() == 0


def test_record_with_reservation_counts_cost_once(store: StoreFactory) -> None:
    """record(rec, reservation=hold) adds the actual cost and ends the hold in one step."""
    ledger = ledger_on(store, daily_budget_usd=Decimal("1"))
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


def test_settle_and_release_only_end_the_hold_and_are_idempotent(store: StoreFactory) -> None:
    """settle() and release() end the hold once, never add spend, and repeat harmlessly."""
    ledger = ledger_on(store)
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


def test_context_manager_releases_on_exception_and_on_exit(store: StoreFactory) -> None:
    """A with-block ends an unsettled hold whether it raises or not; record() inside still counts once."""
    ledger = ledger_on(store, daily_budget_usd=Decimal("1"))
    with pytest.raises(RuntimeError), ledger.reserve(Decimal("1")) as hold:
        raise RuntimeError("call failed")
    assert hold.state == "released"
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == 0
    with ledger.reserve(Decimal("1")) as hold:
        ledger.record(rec("0.2"), reservation=hold)
    assert hold.state == "settled"
    with ledger.reserve(Decimal("0.1")):
        pass
    assert ledger.reserved() == 0
    assert ledger.daily_cost() == Decimal("0.2")


def test_reservation_from_another_ledger_is_refused(store: StoreFactory) -> None:
    """record() refuses a reservation another ledger made (even on the same store), and records nothing."""
    one, two = ledger_on(store), ledger_on(store)
    hold = one.reserve(Decimal("1"))
    with pytest.raises(ValueError, match="another ledger"):
        two.record(rec(), reservation=hold)
    assert hold.state == "held"
    assert two.stats()["total_calls"] == 0
    assert one.reserved() == Decimal("1")
    hold.release()


def test_adopted_reservation_is_ended_by_the_adopter(store: StoreFactory) -> None:
    """A hold made by one ledger is ended through another's adopt() (another worker finishing the call)."""
    one, two = ledger_on(store), ledger_on(store)
    hold = one.reserve(Decimal("0.4"))
    adopted = two.adopt(hold.id, hold.amount, model_id="fal-ai/flux/dev")
    two.record(rec("0.1"), reservation=adopted)
    assert one.reserved() == 0
    assert one.daily_cost() == Decimal("0.1")
    hold.release()
    assert two.daily_cost() == Decimal("0.1")


def test_dropped_reservation_is_freed_by_finalizer(store: StoreFactory) -> None:
    """A reservation garbage-collected without settling frees its amount on the next ledger call."""
    ledger = ledger_on(store, daily_budget_usd=Decimal("1"))
    hold = ledger.reserve(Decimal("1"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.01"))
    del hold
    gc.collect()
    assert ledger.reserved() == 0
    ledger.reserve(Decimal("1")).release()


def test_thread_dying_mid_call_frees_its_reservation(store: StoreFactory) -> None:
    """A thread that reserves and then dies with an exception does not leak its hold."""
    ledger = ledger_on(store, daily_budget_usd=Decimal("1"))
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


def test_reservation_lapses_after_ttl(store: StoreFactory) -> None:
    """A hold older than reservation_ttl (per the clock) stops counting everywhere; settling it later is harmless."""
    clock = FakeClock()
    crashed = ledger_on(store, clock=clock, daily_budget_usd=Decimal("1"), reservation_ttl=60)
    survivor = ledger_on(store, clock=clock, daily_budget_usd=Decimal("1"))
    hold = crashed.reserve(Decimal("1"))
    clock.now += timedelta(seconds=59)
    with pytest.raises(BudgetExceededError):
        survivor.reserve(Decimal("0.5"))
    clock.now += timedelta(seconds=2)
    assert survivor.reserved() == 0
    fresh = survivor.reserve(Decimal("0.5"))
    crashed.record(rec("0.1", at=clock.now), reservation=hold)
    assert survivor.reserved() == Decimal("0.5")
    assert survivor.daily_cost() == Decimal("0.1")
    fresh.release()


def test_no_reservation_ttl_holds_until_ended(store: StoreFactory) -> None:
    """reservation_ttl=None is accepted on every store: the hold never lapses, it ends when released."""
    clock = FakeClock()
    ledger = ledger_on(store, clock=clock, reservation_ttl=None)
    hold = ledger.reserve(Decimal("0.5"))
    clock.now += timedelta(days=30)
    assert ledger.reserved() == Decimal("0.5")
    hold.release()
    assert ledger.reserved() == 0


def test_invalid_configuration_is_refused(store: StoreFactory) -> None:
    """A float budget, a non-positive TTL and positional settings are refused the same way on every store."""
    journal = store.journal()
    with pytest.raises(TypeError):
        JournalLedger(journal, daily_budget_usd=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reservation_ttl"):
        JournalLedger(journal, reservation_ttl=0)
    with pytest.raises(TypeError):
        JournalLedger(journal, Decimal("10"))  # type: ignore[misc]
    assert JournalLedger(journal, daily_budget_usd=Decimal("10")).daily_budget_usd == Decimal("10")


def test_journal_ledger_satisfies_ledger_protocol(store: StoreFactory) -> None:
    """The ledger over every store is a Ledger, the interface the client is written against."""
    ledger: Ledger = ledger_on(store)
    assert isinstance(ledger, Ledger)
    assert isinstance(ledger.journal, Journal)
