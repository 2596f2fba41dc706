"""Tests for falwrap.limiter: the in-process GCRA bucket, the concurrency cap and the Limiter pair."""

from __future__ import annotations

import gc
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from falwrap.config import RateLimitConfig
from falwrap.errors import ConfigurationError, RateLimitTimeout
from falwrap.limiter import ConcurrencyLimit, ConcurrencyLimiter, LeakyBucket, Limiter, RateLimiter, Slot
from tests.helpers.timing import interrupt_main_after, max_in_window


class FakeClock:
    """A clock that moves only when slept on; each sleep first runs the next ``on_sleep`` action, if any."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Callable[[], object]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep:
            self.on_sleep.pop(0)()
        self.now += seconds


def interrupt() -> None:
    raise KeyboardInterrupt


def fake_bucket(rate_per_minute: float, burst: int = 1) -> tuple[LeakyBucket, FakeClock]:
    clock = FakeClock()
    return LeakyBucket(rate_per_minute, burst, clock=clock, sleep=clock.sleep), clock


# --- LeakyBucket: arithmetic, with a fake clock ----------------------------------------------------


def test_first_grant_is_free_and_the_next_waits_one_interval() -> None:
    """An idle bucket grants at once; the next grant waits exactly 60/rate seconds."""
    bucket, clock = fake_bucket(60)
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(1.0)
    assert clock.sleeps == [pytest.approx(1.0)]


def test_burst_goes_back_to_back_then_paces() -> None:
    """burst=3 grants three at once, then one per interval, and refills only up to burst."""
    bucket, clock = fake_bucket(60, burst=3)
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(1.0)
    clock.now += 100
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(1.0)


def test_try_acquire_reserves_nothing_when_refused() -> None:
    """A refused try_acquire leaves the bucket as it was."""
    bucket, _ = fake_bucket(60)
    bucket.acquire()
    assert bucket.try_acquire() == pytest.approx(1.0)
    assert bucket.try_acquire() == pytest.approx(1.0)


def test_timeout_refuses_at_once_and_reserves_nothing() -> None:
    """A slot beyond the timeout raises RateLimitTimeout without sleeping and leaves no reservation."""
    bucket, clock = fake_bucket(6)
    bucket.acquire()
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=9.9)
    assert info.value.wait == pytest.approx(10.0)
    assert clock.sleeps == []
    assert bucket.try_acquire() == pytest.approx(10.0)
    assert bucket.acquire(timeout=10.0) == pytest.approx(10.0)


def test_timeout_zero_grants_a_free_slot() -> None:
    """acquire(timeout=0) takes a slot that is free now."""
    bucket, _ = fake_bucket(60)
    assert bucket.acquire(timeout=0) == 0.0
    with pytest.raises(RateLimitTimeout):
        bucket.acquire(timeout=0)


def test_try_acquire_never_overtakes_a_waiter() -> None:
    """While a caller sleeps toward its slot, try_acquire reports the slot after it."""
    bucket, clock = fake_bucket(60)
    bucket.acquire()
    seen: list[float] = []
    clock.on_sleep.append(lambda: seen.append(bucket.try_acquire()))
    bucket.acquire()
    assert seen == [pytest.approx(2.0)]


def test_sleep_ending_early_is_slept_again() -> None:
    """The waiter re-reads the clock after each sleep and sleeps the rest."""
    clock = FakeClock()

    def short_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        clock.now += seconds / 2

    bucket = LeakyBucket(60, clock=clock, sleep=short_sleep)
    bucket.acquire()
    start = clock.now
    bucket.acquire()
    assert clock.now >= start + 1.0
    assert len(clock.sleeps) > 1


def test_interrupted_last_waiter_gives_its_slot_back() -> None:
    """KeyboardInterrupt during the wait returns the slot when nobody queued after it."""
    bucket, clock = fake_bucket(60)
    bucket.acquire()
    clock.on_sleep.append(interrupt)
    with pytest.raises(KeyboardInterrupt):
        bucket.acquire()
    assert bucket.try_acquire() == pytest.approx(1.0)


def test_interrupted_waiter_keeps_later_slots_in_place() -> None:
    """An interrupted waiter with a waiter queued behind it leaves a gap rather than move that slot."""
    bucket, clock = fake_bucket(60)
    bucket.acquire()

    def second_caller_queues_then_first_is_interrupted() -> None:
        assert bucket.acquire() == pytest.approx(2.0)  # the slot at +2 s, behind the first waiter's +1 s
        raise KeyboardInterrupt

    clock.on_sleep.append(second_caller_queues_then_first_is_interrupted)
    with pytest.raises(KeyboardInterrupt):
        bucket.acquire()
    # Now at +2 s. Had the +1 s slot been "given back", a slot would be free now; it is +3 s.
    assert clock.now == pytest.approx(1002.0)
    assert bucket.try_acquire() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        ((0,), "rate_per_minute"),
        ((-5,), "rate_per_minute"),
        ((math.nan,), "rate_per_minute"),
        ((math.inf,), "rate_per_minute"),
        ((True,), "rate_per_minute"),
        (("60",), "rate_per_minute"),
        ((60, 0), "burst"),
        ((60, 1.5), "burst"),
    ],
)
def test_bad_bucket_configuration_is_refused(args: tuple[object, ...], variable: str) -> None:
    """Non-positive or non-finite rates and bursts below 1 raise ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as info:
        LeakyBucket(*args)  # type: ignore[arg-type]
    assert info.value.variable == variable


def test_protocols_are_satisfied_by_the_in_process_twins() -> None:
    """LeakyBucket is a RateLimiter and ConcurrencyLimit a ConcurrencyLimiter."""
    assert isinstance(LeakyBucket(60), RateLimiter)
    assert isinstance(ConcurrencyLimit(1), ConcurrencyLimiter)


# --- LeakyBucket: real threads and time ------------------------------------------------------------


def test_eight_threads_get_the_rate_and_never_more() -> None:
    """8 threads at 20/s for 3 s: at most 21 grants in any 1 s window and at least 98% of the rate."""
    rate, duration = 20, 3.0
    bucket = LeakyBucket(rate * 60)
    grants: list[float] = []
    end = time.monotonic() + duration

    def worker() -> None:
        while True:
            try:
                bucket.acquire(timeout=end - time.monotonic())
            except RateLimitTimeout:
                return
            grants.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max_in_window(grants) <= rate + 1
    assert len(grants) >= 0.98 * rate * duration


def test_waiters_are_served_in_arrival_order() -> None:
    """Threads arriving 10 ms apart (more than a scheduling quantum) are granted in that order."""
    bucket = LeakyBucket(20 * 60)
    bucket.acquire()
    order: list[int] = []

    def worker(i: int) -> None:
        bucket.acquire()
        order.append(i)

    threads = []
    for i in range(8):
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert order == list(range(8))


def test_timeout_a_minute_away_fails_fast_and_keeps_the_schedule() -> None:
    """acquire(timeout=0.5) with the next slot a minute away raises in < 50 ms; try_acquire still says ~60 s."""
    bucket = LeakyBucket(1)
    bucket.acquire()
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=0.5)
    assert time.monotonic() - start < 0.05
    assert info.value.wait == pytest.approx(60, abs=1)
    assert bucket.try_acquire() == pytest.approx(60, abs=1)


def test_ctrl_c_during_a_real_wait_gives_the_slot_back() -> None:
    """A KeyboardInterrupt delivered while sleeping toward a slot a minute away frees that slot."""
    bucket = LeakyBucket(1)
    bucket.acquire()
    with pytest.raises(KeyboardInterrupt), interrupt_main_after(0.1):
        bucket.acquire()
    assert bucket.try_acquire() == pytest.approx(60, abs=1)


def _run_in_child(child: object) -> int:
    """Fork; run ``child()`` in the child (exit 0 when it returns True); return its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if child() else 1  # type: ignore[operator]
        finally:
            os._exit(code)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the child process hung: the limiter's lock was inherited held")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_bucket_works_in_a_child_forked_while_its_lock_was_held() -> None:
    """A child forked while the parent held the bucket's lock acquires without deadlock."""
    bucket = LeakyBucket(60 * 60)
    bucket._lock.acquire()
    try:
        code = _run_in_child(lambda: bucket.acquire(timeout=1) >= 0.0)
    finally:
        bucket._lock.release()
    assert code == 0
    assert bucket.acquire(timeout=1) >= 0.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_concurrency_limit_works_in_a_child_forked_while_its_lock_was_held() -> None:
    """A forked child starts with every place free and a fresh lock; inherited slots cannot free its places."""
    limit = ConcurrencyLimit(1)
    inherited = limit.acquire()

    def child() -> bool:
        inherited.release()  # a parent's slot: must not free a place in the child
        with limit.acquire(timeout=1):
            held = limit.in_flight() == 1
        return held and limit.in_flight() == 0

    limit._cond.acquire()
    try:
        code = _run_in_child(child)
    finally:
        limit._cond.release()
    assert code == 0
    assert limit.in_flight() == 1
    inherited.release()
    assert limit.in_flight() == 0


# --- ConcurrencyLimit ------------------------------------------------------------------------------


def test_slot_is_released_on_success() -> None:
    """Leaving the with block normally frees the place."""
    limit = ConcurrencyLimit(1)
    with limit.acquire() as slot:
        assert isinstance(slot, Slot)
        assert limit.in_flight() == 1
    assert limit.in_flight() == 0


def test_slot_is_released_on_error() -> None:
    """An exception inside the with block frees the place."""
    limit = ConcurrencyLimit(1)
    with pytest.raises(ValueError), limit.acquire():
        raise ValueError("job failed")
    assert limit.in_flight() == 0


def test_slot_is_released_on_keyboard_interrupt() -> None:
    """A KeyboardInterrupt inside the with block frees the place."""
    limit = ConcurrencyLimit(1)
    with pytest.raises(KeyboardInterrupt), limit.acquire():
        raise KeyboardInterrupt
    assert limit.in_flight() == 0


def test_timeout_raises_and_holds_nothing() -> None:
    """With every place busy, acquire(timeout) raises RateLimitTimeout after the timeout, holding nothing."""
    limit = ConcurrencyLimit(2)
    slots = [limit.acquire(), limit.acquire()]
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0.1)
    assert 0.09 <= time.monotonic() - start < 1.0
    assert limit.in_flight() == 2
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0)
    slots[0].release()
    with limit.acquire(timeout=0):
        assert limit.in_flight() == 2


def test_ctrl_c_while_waiting_holds_nothing() -> None:
    """A KeyboardInterrupt while waiting for a place leaves the count unchanged and the limit usable."""
    limit = ConcurrencyLimit(1)
    held = limit.acquire()
    with pytest.raises(KeyboardInterrupt), interrupt_main_after(0.1):
        limit.acquire()
    assert limit.in_flight() == 1
    held.release()
    with limit.acquire(timeout=0):
        pass
    assert limit.in_flight() == 0


def test_release_is_idempotent_and_renew_is_a_no_op() -> None:
    """release() twice frees one place; renew() reports whether the slot is held."""
    limit = ConcurrencyLimit(2)
    a, b = limit.acquire(), limit.acquire()
    assert a.renew() is True
    a.release()
    a.release()
    assert limit.in_flight() == 1
    assert a.renew() is False
    b.release()
    assert limit.in_flight() == 0


def test_dropped_slot_is_freed_by_the_garbage_collector() -> None:
    """A slot lost without release() (e.g. an interrupt before `with`) gives its place back when collected."""
    limit = ConcurrencyLimit(1)
    limit.acquire()
    gc.collect()
    assert limit.in_flight() == 0


def test_release_wakes_a_waiter() -> None:
    """A waiter blocked on a full limit gets the place as soon as it is released."""
    limit = ConcurrencyLimit(1)
    held = limit.acquire()
    got: list[float] = []

    def waiter() -> None:
        start = time.monotonic()
        with limit.acquire(timeout=5):
            got.append(time.monotonic() - start)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    held.release()
    t.join()
    assert got and got[0] < 1.0


def test_never_more_than_max_in_flight_across_threads() -> None:
    """16 threads hammering a cap of 3 never hold more than 3 places, and do reach 3."""
    limit = ConcurrencyLimit(3)
    lock = threading.Lock()
    current = peak = 0

    def worker() -> None:
        nonlocal current, peak
        for _ in range(30):
            with limit.acquire():
                with lock:
                    current += 1
                    peak = max(peak, current)
                time.sleep(0.001)
                with lock:
                    current -= 1

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3
    assert limit.in_flight() == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_bad_max_in_flight_is_refused(bad: object) -> None:
    """max_in_flight below 1 or not a whole number raises ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        ConcurrencyLimit(bad)  # type: ignore[arg-type]
    assert info.value.variable == "max_in_flight"


# --- Limiter -----------------------------------------------------------------------------------------


def test_from_config_builds_in_process_twins() -> None:
    """Without redis_url, from_config builds a LeakyBucket and a ConcurrencyLimit with the configured values."""
    limiter = Limiter.from_config(RateLimitConfig(requests_per_minute=120, burst=2, max_concurrent=4), "abc123")
    assert isinstance(limiter.rate, LeakyBucket)
    assert (limiter.rate.rate_per_minute, limiter.rate.burst) == (120, 2)
    assert isinstance(limiter.concurrency, ConcurrencyLimit)
    assert limiter.concurrency.max_in_flight == 4


def test_from_config_without_a_cap_has_no_concurrency_limit() -> None:
    """max_concurrent=None gives concurrency=None, and acquire() still paces and returns a slot."""
    limiter = Limiter.from_config(RateLimitConfig(), "abc123")
    assert limiter.concurrency is None
    with limiter.acquire(timeout=0) as slot:
        assert slot.renew() is True


def test_from_config_refuses_an_empty_namespace() -> None:
    """An empty namespace raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        Limiter.from_config(RateLimitConfig(), "")


def test_limiter_acquire_releases_the_place_when_the_rate_times_out() -> None:
    """Limiter.acquire holds a place, and gives it back when the rate slot cannot be had in time."""
    limiter = Limiter(LeakyBucket(1), ConcurrencyLimit(1))
    with limiter.acquire(timeout=1):
        pass
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(timeout=0.1)
    assert isinstance(limiter.concurrency, ConcurrencyLimit)
    assert limiter.concurrency.in_flight() == 0


def test_infinite_timeout_means_wait_as_long_as_needed() -> None:
    """timeout=math.inf behaves as None instead of overflowing a lock's timeout."""
    bucket = LeakyBucket(60 * 60)
    assert bucket.acquire(timeout=math.inf) == 0.0
    limit = ConcurrencyLimit(1)
    with limit.acquire(timeout=math.inf):
        pass
    with Limiter(bucket, limit).acquire(timeout=math.inf):
        pass


def test_importing_falwrap_does_not_import_redis() -> None:
    """`import falwrap` and falwrap.limiter work without loading redis-py."""
    code = "import sys, falwrap, falwrap.limiter; sys.exit('redis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=30).returncode == 0
