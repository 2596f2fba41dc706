"""Tests for falwrap.limiter specific to the in-process twins: injected clocks, fork safety, the GC, Limiter.

What every store's limits share (grants, bursts, timeouts, Ctrl-C, FIFO, caps across
threads) is in ``tests/contract/test_rate_limiter.py`` and ``test_concurrency.py``,
which run the in-process twins as the ``memory`` store.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from falwrap.config import RateLimitConfig
from falwrap.errors import ConfigurationError, RateLimitTimeout
from falwrap.limiter import ConcurrencyLimit, LeakyBucket, Limiter


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


def fake_bucket(rate_per_minute: float, burst: int = 1) -> tuple[LeakyBucket, FakeClock]:
    clock = FakeClock()
    return LeakyBucket(rate_per_minute, burst, clock=clock, sleep=clock.sleep), clock


# --- LeakyBucket: arithmetic, with a fake clock ----------------------------------------------------


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


# --- Fork safety -----------------------------------------------------------------------------------


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


def test_dropped_slot_is_freed_by_the_garbage_collector() -> None:
    """A slot lost without release() (e.g. an interrupt before `with`) gives its place back when collected."""
    limit = ConcurrencyLimit(1)
    limit.acquire()
    gc.collect()
    assert limit.in_flight() == 0


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


def test_importing_falwrap_does_not_import_redis() -> None:
    """`import falwrap` and falwrap.limiter work without loading redis-py."""
    code = "import sys, falwrap, falwrap.limiter; sys.exit('redis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=30).returncode == 0
