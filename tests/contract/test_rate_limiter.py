"""The rate limiter contract: every store's GCRA schedule (memory, SQLite, PostgreSQL, Redis) behaves the same.

Real time, real servers: bounds are generous for a loaded 2-core machine, and the
waits measured are those a caller sees (a store's transaction included).
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from typing import Any

import pytest

from falwrap.backends import open_store
from falwrap.errors import ConfigurationError, RateLimitTimeout
from falwrap.limiter import Limiter
from falwrap.limits import RateLimiter
from tests.contract.stores import StoreFactory
from tests.helpers.timing import NOTING_DELAY, interrupt_main_after, max_granted_per

#: How far a measured wait may be from the schedule (a store round trip, a loaded scheduler).
SLACK = 0.15

#: Share of the rate a loaded run must still get (not starved); the benchmark measures the real figure.
USED_AT_LEAST = 0.75


def test_a_store_rate_limiter_is_a_rate_limiter(store: StoreFactory) -> None:
    """Every store hands out a RateLimiter."""
    assert isinstance(store.open().rate_limiter(60, 1), RateLimiter)


def test_first_grant_is_free_and_the_next_waits_one_interval(store: StoreFactory) -> None:
    """An idle schedule grants at once; the next grant waits 60/rate seconds."""
    bucket = store.open().rate_limiter(60, 1)
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(1.0, abs=SLACK)


def test_burst_goes_back_to_back_then_paces(store: StoreFactory) -> None:
    """burst=3 grants three at once, then one per interval."""
    bucket = store.open().rate_limiter(60, 3)
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(1.0, abs=SLACK)


def test_burst_refills_only_up_to_burst(store: StoreFactory) -> None:
    """After an idle spell longer than the burst needs, only burst grants go back to back."""
    # 0.25 s apart: the three tries below take a few store round trips, far less even under load.
    bucket = store.open().rate_limiter(240, 2)
    assert [bucket.try_acquire() for _ in range(2)] == [0.0, 0.0]
    time.sleep(1.0)  # four intervals: enough to refill more than two
    assert [bucket.try_acquire() for _ in range(2)] == [0.0, 0.0]
    assert bucket.try_acquire() > 0.0


def test_try_acquire_reserves_nothing_when_refused(store: StoreFactory) -> None:
    """A refused try_acquire leaves the schedule as it was: asking again gives the same answer."""
    bucket = store.open().rate_limiter(60, 1)
    bucket.acquire()
    first = bucket.try_acquire()
    second = bucket.try_acquire()
    assert first == pytest.approx(1.0, abs=SLACK)
    assert second == pytest.approx(first, abs=SLACK)
    assert second <= first


def test_timeout_refuses_at_once_and_reserves_nothing(store: StoreFactory) -> None:
    """A slot beyond the timeout raises at once with the wait, and a later caller gets that slot."""
    bucket = store.open().rate_limiter(6, 1)
    bucket.acquire()
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=9.0)
    assert time.monotonic() - start < 0.5
    assert info.value.wait == pytest.approx(10.0, abs=SLACK)
    assert bucket.try_acquire() == pytest.approx(10.0, abs=SLACK)


def test_a_slot_within_the_timeout_is_waited_for(store: StoreFactory) -> None:
    """A slot nearer than the timeout is granted after sleeping until it is due."""
    bucket = store.open().rate_limiter(60, 1)
    bucket.acquire()
    with pytest.raises(RateLimitTimeout):
        bucket.acquire(timeout=0.5)
    assert bucket.acquire(timeout=1.5) == pytest.approx(1.0, abs=SLACK)


def test_timeout_zero_grants_a_free_slot_only(store: StoreFactory) -> None:
    """acquire(timeout=0) takes a slot that is free now and refuses one that is not."""
    bucket = store.open().rate_limiter(60, 1)
    assert bucket.acquire(timeout=0) == 0.0
    with pytest.raises(RateLimitTimeout):
        bucket.acquire(timeout=0)


def test_timeout_a_minute_away_fails_fast_and_keeps_the_schedule(store: StoreFactory) -> None:
    """acquire(timeout=2) with the next slot a minute away raises at once; try_acquire still says ~60 s."""
    bucket = store.open().rate_limiter(1, 1)
    bucket.acquire()
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=2.0)
    assert time.monotonic() - start < 1.0  # a store round trip or two, even under load; not the 2 s
    assert info.value.wait == pytest.approx(60, abs=1)
    assert bucket.try_acquire() == pytest.approx(60, abs=1)


def test_try_acquire_never_overtakes_a_waiter(store: StoreFactory) -> None:
    """While a caller sleeps toward its slot, try_acquire reports the slot after it."""
    bucket = store.open().rate_limiter(60, 1)
    bucket.acquire()
    waiter = threading.Thread(target=bucket.acquire)
    waiter.start()
    time.sleep(0.3)  # the waiter has reserved the slot at +1 s and sleeps
    seen = bucket.try_acquire()
    waiter.join()
    assert seen == pytest.approx(1.7, abs=SLACK)


def test_ctrl_c_during_a_real_wait_gives_the_slot_back(store: StoreFactory) -> None:
    """A KeyboardInterrupt while sleeping toward a slot a minute away frees that slot."""
    bucket = store.open().rate_limiter(1, 1)
    bucket.acquire()
    with pytest.raises(KeyboardInterrupt), interrupt_main_after(0.1):
        bucket.acquire()
    assert bucket.try_acquire() == pytest.approx(60, abs=1)


def test_infinite_timeout_means_wait_as_long_as_needed(store: StoreFactory) -> None:
    """timeout=math.inf behaves as None for the schedule, the cap, and a Limiter pairing them."""
    s = store.open()
    bucket = s.rate_limiter(3600, 1)
    assert bucket.acquire(timeout=math.inf) == 0.0
    with s.concurrency_limiter(1).acquire(timeout=math.inf) as held:
        assert held.renew() is True
    with Limiter(bucket, s.concurrency_limiter(1)).acquire(timeout=math.inf) as slot:
        assert slot.renew() is True


def test_eight_threads_get_the_rate_and_never_more(store: StoreFactory) -> None:
    """8 threads at 20/s for 3 s: at most 21 grants in any 1 s window, at most the rate in all, not starved."""
    rate, duration = 20, 3.0
    bucket = store.open().rate_limiter(rate * 60, 1)
    grants: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + duration

    def worker() -> None:
        while True:
            try:
                bucket.acquire(timeout=end - time.monotonic())
            except RateLimitTimeout:
                return
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max_granted_per(grants, 1.0) <= rate + 1
    # Never more than the rate, exactly; and not starved. How close to the rate it gets is a
    # performance figure (benchmarks/bench_limiter.py: 100% used), which a store stalled by the
    # rest of a loaded suite lowers here: PostgreSQL once granted 55 of 61 under CI's -n 4.
    # A grant's deadline is counted from the call, the store's schedule from the request's arrival:
    # grants may run past the end by as long as a request takes to arrive (NOTING_DELAY at most).
    assert USED_AT_LEAST * rate * duration <= len(grants) <= rate * (duration + NOTING_DELAY) + 1


def test_waiters_are_served_in_arrival_order(store: StoreFactory) -> None:
    """Waiters are granted in the order their requests reached the store.

    Each thread starts once the previous one's reservation shows in the schedule (``try_acquire`` says
    the next free slot moved an interval later), so the order of arrival at the store is known
    whatever the machine's load; spacing threads by a sleep left it to the scheduler.
    """
    interval = 0.4
    bucket = store.open().rate_limiter(round(60 / interval), 1)
    bucket.acquire()
    order: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        bucket.acquire()
        with lock:
            order.append(i)

    def next_free() -> float:
        # The queue stays at least an interval ahead of now, so this never finds a slot free (and takes none).
        wait = bucket.try_acquire()
        assert wait > 0, "the schedule ran dry: a waiter took longer than an interval to reach the store"
        return time.monotonic() + wait

    threads = []
    free_at = next_free()
    for i in range(8):
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while (now_free := next_free()) < free_at + interval / 2:
            assert time.monotonic() < deadline, f"waiter {i} never reached the store"
            time.sleep(0.005)
        free_at = now_free
    for t in threads:
        t.join()
    assert order == list(range(8))


def test_two_instances_share_one_schedule(store: StoreFactory) -> None:
    """A slot taken through one store instance is gone for the other (the namespace has one schedule)."""
    a = store.open().rate_limiter(60, 1)
    b = store.open().rate_limiter(60, 1)
    assert a.acquire() == 0.0
    assert b.try_acquire() == pytest.approx(1.0, abs=SLACK)
    assert b.acquire() == pytest.approx(1.0, abs=SLACK)
    assert a.try_acquire() == pytest.approx(1.0, abs=SLACK)


def _bucket_worker(url: str, namespace: str, start_at: float, end_at: float, results: Any) -> None:
    store = open_store(url, namespace=namespace)
    bucket = store.rate_limiter(20 * 60, 1)
    times: list[float] = []
    time.sleep(max(0.0, start_at - time.monotonic()))
    while True:
        try:
            bucket.acquire(timeout=end_at - time.monotonic())
        except RateLimitTimeout:
            break
        # CLOCK_MONOTONIC is system-wide, so the processes' timestamps compare.
        times.append(time.monotonic())
    store.close()
    results.put(times)


def test_four_processes_share_one_rate(store: StoreFactory) -> None:
    """4 processes at 20/s for 3 s: at most 21 in any 1 s window, at most the rate in all, every process served."""
    if not store.shared:
        pytest.skip("memory: each process has its own schedule")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.monotonic() + 1.0
    end_at = start_at + 3.0
    args = (store.url, store.namespace, start_at, end_at, results)
    procs = [ctx.Process(target=_bucket_worker, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    grants: list[float] = []
    per_process = []
    for _ in procs:
        times = results.get(timeout=20)
        per_process.append(len(times))
        grants.extend(times)
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert max_granted_per(grants, 1.0) <= 21
    assert USED_AT_LEAST * 20 * 3.0 <= len(grants) <= 20 * (3.0 + NOTING_DELAY) + 1  # see the eight-thread case
    assert all(n > 0 for n in per_process)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        ((0, 1), "rate_per_minute"),
        ((-5, 1), "rate_per_minute"),
        ((math.nan, 1), "rate_per_minute"),
        ((math.inf, 1), "rate_per_minute"),
        ((True, 1), "rate_per_minute"),
        (("60", 1), "rate_per_minute"),
        ((60, 0), "burst"),
        ((60, 1.5), "burst"),
    ],
)
def test_bad_rate_configuration_is_refused(store: StoreFactory, args: tuple[Any, Any], variable: str) -> None:
    """Non-positive or non-finite rates and bursts below 1 raise ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as info:
        store.open().rate_limiter(*args)
    assert info.value.variable == variable
