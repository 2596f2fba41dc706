"""The concurrency cap contract: every store's cap on jobs in flight (memory, SQLite, PostgreSQL, Redis).

Only the :class:`~falwrap.limits.ConcurrencyLimiter` interface is used: how many
places are held is observed by taking the free ones (``acquire(timeout=0)``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest

from falwrap.backends import open_store
from falwrap.errors import ConfigurationError, RateLimitTimeout
from falwrap.limits import ConcurrencyLimiter, Slot
from tests.contract.stores import StoreFactory
from tests.helpers.timing import interrupt_main_after


def free_places(limit: ConcurrencyLimiter) -> int:
    """How many places can be taken right now (each is taken, counted, then given back)."""
    taken: list[Slot] = []
    try:
        while True:
            taken.append(limit.acquire(timeout=0))
    except RateLimitTimeout:
        return len(taken)
    finally:
        for slot in taken:
            slot.release()


def test_a_store_cap_is_a_concurrency_limiter(store: StoreFactory) -> None:
    """Every store hands out a ConcurrencyLimiter whose places are Slots."""
    limit = store.open().concurrency_limiter(1)
    assert isinstance(limit, ConcurrencyLimiter)
    with limit.acquire(timeout=0) as slot:
        assert isinstance(slot, Slot)


def test_slot_is_released_on_success_error_and_keyboard_interrupt(store: StoreFactory) -> None:
    """Leaving the with block by return, exception or KeyboardInterrupt frees the place at once."""
    limit = store.open().concurrency_limiter(1)
    with limit.acquire(timeout=0):
        assert free_places(limit) == 0
    assert free_places(limit) == 1
    with pytest.raises(ValueError), limit.acquire(timeout=0):
        raise ValueError("job failed")
    assert free_places(limit) == 1
    with pytest.raises(KeyboardInterrupt), limit.acquire(timeout=0):
        raise KeyboardInterrupt
    assert free_places(limit) == 1


def test_timeout_raises_after_the_timeout_and_holds_nothing(store: StoreFactory) -> None:
    """With every place busy, acquire(timeout) raises after about the timeout, holding nothing."""
    limit = store.open().concurrency_limiter(2)
    slots = [limit.acquire(), limit.acquire()]
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0.2)
    assert 0.19 <= time.monotonic() - start < 1.0
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0)
    slots[0].release()
    assert free_places(limit) == 1
    slots[1].release()
    assert free_places(limit) == 2


def test_ctrl_c_while_waiting_holds_nothing(store: StoreFactory) -> None:
    """A KeyboardInterrupt while waiting for a place leaves the places as they were."""
    limit = store.open().concurrency_limiter(1)
    held = limit.acquire()
    with pytest.raises(KeyboardInterrupt), interrupt_main_after(0.1):
        limit.acquire()
    assert free_places(limit) == 0
    held.release()
    assert free_places(limit) == 1


def test_release_is_idempotent(store: StoreFactory) -> None:
    """release() twice frees one place only, and renew() reports the slot no longer held."""
    limit = store.open().concurrency_limiter(2)
    a, b = limit.acquire(), limit.acquire()
    assert a.renew() is True
    a.release()
    a.release()
    assert free_places(limit) == 1
    assert a.renew() is False
    b.release()
    assert free_places(limit) == 2


def test_a_waiter_gets_a_released_place_quickly(store: StoreFactory) -> None:
    """A waiter on a full cap gets a place released 0.3 s later within the poll cap (100 ms) plus slack."""
    limit = store.open().concurrency_limiter(1)
    held = limit.acquire()
    timer = threading.Timer(0.3, held.release)
    timer.start()
    start = time.monotonic()
    with limit.acquire(timeout=5):
        waited = time.monotonic() - start
    timer.join()
    assert 0.25 <= waited < 0.8


def test_renew_keeps_a_place_past_its_lease(store: StoreFactory) -> None:
    """A slot renewed more often than its 0.3 s lease is still held after 1 s."""
    limit = store.open().concurrency_limiter(1, lease_seconds=0.3)
    slot = limit.acquire()
    assert slot.lease_seconds == (0.3 if store.shared else None)
    for _ in range(10):
        time.sleep(0.1)
        assert slot.renew() is True
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0)
    slot.release()
    assert slot.renew() is False
    with limit.acquire(timeout=0):
        pass


def test_renew_after_the_lease_ran_out(store: StoreFactory) -> None:
    """A lapsed lease is taken back while its place is free and lost once another holder took it
    (an in-process place never lapses: it stays held)."""
    # Half-second leases: the other holder's must outlive a store round trip on a loaded machine
    # (0.1 s leases lapsed between its acquire and our renew under CI's -n 4).
    limit = store.open().concurrency_limiter(1, lease_seconds=0.5)
    slot = limit.acquire()
    time.sleep(0.7)
    assert slot.renew() is True
    time.sleep(0.7)
    if store.shared:
        other = limit.acquire(timeout=0)
        assert slot.renew() is False
        other.release()
    else:
        with pytest.raises(RateLimitTimeout):
            limit.acquire(timeout=0)
        assert slot.renew() is True
        slot.release()


def test_two_instances_share_the_places(store: StoreFactory) -> None:
    """A place held through one store instance is busy for the other."""
    a = store.open().concurrency_limiter(1)
    b = store.open().concurrency_limiter(1)
    held = a.acquire(timeout=0)
    with pytest.raises(RateLimitTimeout):
        b.acquire(timeout=0)
    held.release()
    with b.acquire(timeout=0):
        assert free_places(a) == 0


def test_never_more_than_max_in_flight_across_threads(store: StoreFactory) -> None:
    """16 threads on a cap of 3 (two store instances) never hold more than 3 places, and do reach 3."""
    limits = [store.open().concurrency_limiter(3), store.open().concurrency_limiter(3)]
    lock = threading.Lock()
    current = peak = 0

    def worker(i: int) -> None:
        nonlocal current, peak
        for _ in range(8):
            with limits[i % 2].acquire(timeout=30):
                with lock:
                    current += 1
                    peak = max(peak, current)
                time.sleep(0.005)
                with lock:
                    current -= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3
    assert free_places(limits[0]) == 3


def _hold_then_hang(url: str, namespace: str, ready: Any) -> None:
    store = open_store(url, namespace=namespace)
    limit = store.concurrency_limiter(1, lease_seconds=1)
    asked_at = time.monotonic()  # before the lease began
    limit.acquire()
    ready.put((asked_at, time.monotonic()))  # and after: on a loaded machine, up to half a second apart
    time.sleep(60)


def test_the_place_of_a_killed_process_lapses(store: StoreFactory) -> None:
    """A process SIGKILLed while holding a place (1 s lease) stops holding it once the lease runs out."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    proc = ctx.Process(target=_hold_then_hang, args=(store.url, store.namespace, ready))
    proc.start()
    asked_at, held_at = ready.get(timeout=20)
    os.kill(proc.pid or 0, signal.SIGKILL)
    proc.join(timeout=5)
    limit = store.open().concurrency_limiter(1, lease_seconds=1)
    if store.shared:
        with pytest.raises(RateLimitTimeout):
            limit.acquire(timeout=0)
    with limit.acquire(timeout=3):
        freed_at = time.monotonic()
    # The lease began between asked_at and held_at: it cannot lapse sooner than a second after the
    # first (0.1 s for the two clocks), and the place comes back soon after it does.
    assert freed_at - held_at < 2.5
    if store.shared:
        assert freed_at - asked_at >= 0.9


def _cap_worker(url: str, namespace: str, start_at: float, results: Any) -> None:
    store = open_store(url, namespace=namespace)
    limit = store.concurrency_limiter(2)
    lock = threading.Lock()
    spans: list[tuple[float, float]] = []

    def work() -> None:
        for _ in range(6):
            with limit.acquire(timeout=30):
                begun = time.monotonic()
                time.sleep(0.01)
                ended = time.monotonic()
            with lock:
                spans.append((begun, ended))

    time.sleep(max(0.0, start_at - time.monotonic()))
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    results.put(spans)


def test_never_more_than_max_in_flight_across_processes(store: StoreFactory) -> None:
    """4 processes x 3 threads on a cap of 2: at no instant are more than 2 places held, and 2 are reached."""
    if not store.shared:
        pytest.skip("memory: each process has its own cap")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.monotonic() + 1.0
    procs = [ctx.Process(target=_cap_worker, args=(store.url, store.namespace, start_at, results)) for _ in range(4)]
    for p in procs:
        p.start()
    spans: list[tuple[float, float]] = []
    for _ in procs:
        spans.extend(results.get(timeout=60))
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert len(spans) == 4 * 3 * 6
    # Each span lies inside its lease (measured inside the with block, on the system-wide
    # monotonic clock), so spans overlapping in time were held at once.
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans], key=lambda ev: (ev[0], ev[1]))
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    assert peak == 2


@pytest.mark.parametrize(
    ("args", "kwargs", "variable"),
    [
        ((0,), {}, "max_in_flight"),
        ((-1,), {}, "max_in_flight"),
        ((1.5,), {}, "max_in_flight"),
        ((True,), {}, "max_in_flight"),
        ((None,), {}, "max_in_flight"),
        ((1,), {"lease_seconds": 0}, "lease_seconds"),
        ((1,), {"lease_seconds": math.nan}, "lease_seconds"),
    ],
)
def test_bad_cap_configuration_is_refused(
    store: StoreFactory, args: tuple[Any, ...], kwargs: dict[str, Any], variable: str
) -> None:
    """A cap below 1 or not a whole number, or a lease under 0.01 s, raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        store.open().concurrency_limiter(*args, **kwargs)
    assert info.value.variable == variable
