"""Tests for falwrap.backends.redis_limiter against the real Redis on 127.0.0.1 (database 15)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from falwrap.backends import open_store
from falwrap.backends.redis_limiter import RedisConcurrencyLimit, RedisLeakyBucket, redis_client_from_url
from falwrap.config import RateLimitConfig
from falwrap.errors import BackendUnavailableError, ConfigurationError, RateLimitTimeout
from falwrap.limiter import ConcurrencyLimiter, Limiter, RateLimiter
from tests.helpers.timing import interrupt_main_after, max_in_window

pytestmark = pytest.mark.redis

#: Nothing listens on port 1 of the loopback interface: connections are refused at once.
UNREACHABLE = "redis://127.0.0.1:1/15"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client built the way the limiters build theirs (short timeouts, one retry)."""
    c = redis_client_from_url(redis_url)
    yield c
    c.close()


class Proxy:
    """A TCP relay on 127.0.0.1 to the test Redis that can stop answering or go away, like a failing server."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.frozen = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            self.sockets += [down, up]
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.frozen.is_set():  # frozen: swallow everything, answer nothing
                    dst.sendall(data)
        except OSError:
            pass

    def freeze(self) -> None:
        """Keep every connection open but stop relaying: a server that hangs."""
        self.frozen.set()

    def close(self) -> None:
        """Close the port and every connection: a server that went away."""
        for s in self.sockets:
            # shutdown() first: close() alone does not wake a thread blocked in accept() or recv().
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[Proxy]:
    """A relay to the test Redis, closed afterwards."""
    kwargs = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    p = Proxy((kwargs["host"], kwargs["port"]))
    yield p
    p.close()


# --- RedisLeakyBucket ------------------------------------------------------------------------------


def test_bucket_grants_then_paces(client: redis.Redis, redis_namespace: str) -> None:
    """The first grant is free; the next is one interval away, and try_acquire reserves nothing."""
    bucket = RedisLeakyBucket(client, f"{redis_namespace}:rate", 60)
    assert isinstance(bucket, RateLimiter)
    assert bucket.acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(1.0, abs=0.05)
    assert bucket.try_acquire() == pytest.approx(1.0, abs=0.05)
    assert bucket.acquire() == pytest.approx(1.0, abs=0.05)


def test_bucket_burst(client: redis.Redis, redis_namespace: str) -> None:
    """burst=3 grants three back to back, then paces."""
    bucket = RedisLeakyBucket(client, f"{redis_namespace}:rate", 60, burst=3)
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(1.0, abs=0.05)


def test_bucket_state_is_redis_time_in_microseconds_and_expires(
    client: redis.Redis, redis_client: Any, redis_namespace: str
) -> None:
    """The key holds the TAT in integer microseconds of Redis TIME, with an expiry no longer than needed."""
    key = f"{redis_namespace}:rate"
    bucket = RedisLeakyBucket(client, key, 60)
    bucket.acquire()
    seconds, micros = redis_client.time()
    now_us = seconds * 1_000_000 + micros
    tat = int(redis_client.get(key))
    assert 0 < tat - now_us <= 1_000_000
    assert 0 < redis_client.pttl(key) <= 1001


def test_bucket_timeout_a_minute_away_fails_fast(client: redis.Redis, redis_namespace: str) -> None:
    """acquire(timeout=0.5) with the next slot a minute away raises in < 50 ms; try_acquire still says ~60 s."""
    bucket = RedisLeakyBucket(client, f"{redis_namespace}:rate", 1)
    bucket.acquire()
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=0.5)
    assert time.monotonic() - start < 0.05
    assert info.value.wait == pytest.approx(60, abs=1)
    assert bucket.try_acquire() == pytest.approx(60, abs=1)


def test_bucket_ctrl_c_during_the_wait_gives_the_slot_back(client: redis.Redis, redis_namespace: str) -> None:
    """A KeyboardInterrupt while sleeping toward a slot a minute away frees that slot in Redis."""
    bucket = RedisLeakyBucket(client, f"{redis_namespace}:rate", 1)
    bucket.acquire()
    with pytest.raises(KeyboardInterrupt), interrupt_main_after(0.1):
        bucket.acquire()
    assert bucket.try_acquire() == pytest.approx(60, abs=1)


def _bucket_worker(url: str, key: str, start_at: float, end_at: float, results: Any) -> None:
    bucket = RedisLeakyBucket(redis_client_from_url(url), key, 20 * 60)
    times: list[float] = []
    time.sleep(max(0.0, start_at - time.monotonic()))
    while True:
        try:
            bucket.acquire(timeout=end_at - time.monotonic())
        except RateLimitTimeout:
            break
        # CLOCK_MONOTONIC is system-wide, so the processes' timestamps compare.
        times.append(time.monotonic())
    results.put(times)


def test_four_processes_share_one_rate(redis_url: str, redis_namespace: str) -> None:
    """4 processes sharing a RedisLeakyBucket at 20/s for 3 s: at most 21 in any 1 s window, ≥ 98% used."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.monotonic() + 0.5
    end_at = start_at + 3.0
    key = f"{redis_namespace}:rate"
    procs = [ctx.Process(target=_bucket_worker, args=(redis_url, key, start_at, end_at, results)) for _ in range(4)]
    for p in procs:
        p.start()
    grants: list[float] = []
    per_process = []
    for _ in procs:
        times = results.get(timeout=10)
        per_process.append(len(times))
        grants.extend(times)
    for p in procs:
        p.join(timeout=5)
        assert p.exitcode == 0
    assert max_in_window(grants) <= 21
    assert len(grants) >= 0.98 * 20 * 3.0
    assert all(n > 0 for n in per_process)


# --- RedisConcurrencyLimit -------------------------------------------------------------------------


def test_lease_is_released_on_success_error_and_keyboard_interrupt(client: redis.Redis, redis_namespace: str) -> None:
    """Leaving the with block by return, exception or KeyboardInterrupt frees the lease at once."""
    limit = RedisConcurrencyLimit(client, f"{redis_namespace}:inflight", 1)
    assert isinstance(limit, ConcurrencyLimiter)
    with limit.acquire(timeout=0):
        assert limit.in_flight() == 1
    assert limit.in_flight() == 0
    with pytest.raises(ValueError), limit.acquire(timeout=0):
        raise ValueError("job failed")
    assert limit.in_flight() == 0
    with pytest.raises(KeyboardInterrupt), limit.acquire(timeout=0):
        raise KeyboardInterrupt
    assert limit.in_flight() == 0


def test_lease_timeout_raises_and_release_is_idempotent(client: redis.Redis, redis_namespace: str) -> None:
    """A full limit raises RateLimitTimeout after the timeout; a double release frees one place only."""
    limit = RedisConcurrencyLimit(client, f"{redis_namespace}:inflight", 2)
    a, b = limit.acquire(), limit.acquire()
    start = time.monotonic()
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0.2)
    assert 0.19 <= time.monotonic() - start < 1.0
    assert limit.in_flight() == 2
    a.release()
    a.release()
    assert limit.in_flight() == 1
    b.release()
    assert limit.in_flight() == 0


def test_waiter_gets_a_released_place_quickly(client: redis.Redis, redis_namespace: str) -> None:
    """A waiter polling a full limit gets a released place within the poll cap (100 ms) plus slack."""
    limit = RedisConcurrencyLimit(client, f"{redis_namespace}:inflight", 1)
    held = limit.acquire()
    threading.Timer(0.3, held.release).start()
    start = time.monotonic()
    with limit.acquire(timeout=5):
        waited = time.monotonic() - start
    assert 0.25 <= waited < 0.6


def _hold_then_hang(url: str, key: str, ready: Any) -> None:
    limit = RedisConcurrencyLimit(redis_client_from_url(url), key, 1, lease_seconds=1)
    limit.acquire()
    ready.put(time.monotonic())
    time.sleep(60)


def test_place_of_a_killed_process_frees_itself_after_the_lease(
    client: redis.Redis, redis_url: str, redis_namespace: str
) -> None:
    """A process SIGKILLed while holding a place (1 s lease) stops holding it once the lease runs out."""
    key = f"{redis_namespace}:inflight"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    proc = ctx.Process(target=_hold_then_hang, args=(redis_url, key, ready))
    proc.start()
    held_at = ready.get(timeout=10)
    os.kill(proc.pid or 0, signal.SIGKILL)
    proc.join(timeout=5)
    limit = RedisConcurrencyLimit(client, key, 1, lease_seconds=1)
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0)
    with limit.acquire(timeout=3):
        freed_after = time.monotonic() - held_at
    assert 0.9 <= freed_after < 2.0


def test_renew_keeps_a_lease_past_its_length(client: redis.Redis, redis_namespace: str) -> None:
    """A slot renewed more often than its 0.3 s lease is still held after 1 s."""
    limit = RedisConcurrencyLimit(client, f"{redis_namespace}:inflight", 1, lease_seconds=0.3)
    slot = limit.acquire()
    assert slot.lease_seconds == 0.3
    for _ in range(10):
        time.sleep(0.1)
        assert slot.renew() is True
    with pytest.raises(RateLimitTimeout):
        limit.acquire(timeout=0)
    slot.release()
    assert slot.renew() is False
    with limit.acquire(timeout=0):
        pass


def test_renew_after_expiry_takes_the_place_back_only_if_free(client: redis.Redis, redis_namespace: str) -> None:
    """An expired lease renews while a place is free, and reports False once another holder took it."""
    limit = RedisConcurrencyLimit(client, f"{redis_namespace}:inflight", 1, lease_seconds=0.1)
    slot = limit.acquire()
    time.sleep(0.2)
    assert slot.renew() is True
    time.sleep(0.2)
    other = limit.acquire(timeout=0)
    assert slot.renew() is False
    other.release()


def test_never_more_than_max_in_flight_across_threads(client: redis.Redis, redis_namespace: str) -> None:
    """8 threads sharing a cap of 2 in Redis never hold more than 2 places."""
    limit = RedisConcurrencyLimit(client, f"{redis_namespace}:inflight", 2)
    lock = threading.Lock()
    current = peak = 0

    def worker() -> None:
        nonlocal current, peak
        for _ in range(5):
            with limit.acquire(timeout=10):
                with lock:
                    current += 1
                    peak = max(peak, current)
                time.sleep(0.01)
                with lock:
                    current -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2
    assert limit.in_flight() == 0


# --- Configuration and failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "variable"),
    [
        (lambda c: RedisLeakyBucket(c, "k", 0), "rate_per_minute"),
        (lambda c: RedisLeakyBucket(c, "k", 60, burst=0), "burst"),
        (lambda c: RedisLeakyBucket(c, "", 60), "key"),
        (lambda c: RedisConcurrencyLimit(c, "k", 0), "max_in_flight"),
        (lambda c: RedisConcurrencyLimit(c, "k", 1, lease_seconds=0), "lease_seconds"),
    ],
)
def test_bad_values_are_refused(client: redis.Redis, build: Any, variable: str) -> None:
    """Out-of-range values raise ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError) as info:
        build(client)
    assert info.value.variable == variable


def test_unreachable_redis_at_construction_is_a_configuration_error() -> None:
    """A server that refuses connections fails construction with ConfigurationError, quickly."""
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        open_store(UNREACHABLE, namespace="ns")
    assert "127.0.0.1:1" in str(info.value)
    with pytest.raises(ConfigurationError):
        RedisLeakyBucket(redis_client_from_url(UNREACHABLE), "k", 60)
    with pytest.raises(ConfigurationError):
        RedisConcurrencyLimit(redis_client_from_url(UNREACHABLE), "k", 1)
    assert time.monotonic() - start < 1.0


def test_malformed_redis_url_is_a_configuration_error() -> None:
    """A URL redis-py cannot parse raises ConfigurationError naming FALWRAP_REDIS_URL."""
    with pytest.raises(ConfigurationError) as info:
        redis_client_from_url("redis://127.0.0.1:notaport/0")
    assert info.value.variable == "FALWRAP_REDIS_URL"


def test_redis_lost_after_construction_raises_a_typed_error_quickly(proxy: Proxy, redis_namespace: str) -> None:
    """Once Redis goes away, acquire, try_acquire and the lease limit raise BackendUnavailableError at once."""
    c = redis_client_from_url(f"redis://127.0.0.1:{proxy.port}/15")
    bucket = RedisLeakyBucket(c, f"{redis_namespace}:rate", 60)
    limit = RedisConcurrencyLimit(c, f"{redis_namespace}:inflight", 1)
    proxy.close()
    start = time.monotonic()
    for call in (bucket.acquire, bucket.try_acquire, limit.acquire, limit.in_flight):
        with pytest.raises(BackendUnavailableError) as info:
            call()
        assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert time.monotonic() - start < 0.5
    c.close()


def test_redis_that_stops_answering_raises_after_the_socket_timeout(proxy: Proxy, redis_namespace: str) -> None:
    """A server that keeps connections open but never answers gives BackendUnavailableError after the socket timeout."""
    c = redis.Redis(port=proxy.port, db=15, socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    bucket = RedisLeakyBucket(c, f"{redis_namespace}:rate", 60)
    slot = RedisConcurrencyLimit(c, f"{redis_namespace}:inflight", 1).acquire()
    proxy.freeze()
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        bucket.acquire()
    assert isinstance(info.value.__cause__, redis.TimeoutError)
    assert time.monotonic() - start < 1.0
    # Renewal and release do not raise: the job goes on and the lease frees itself.
    assert slot.renew() is False
    slot.release()
    c.close()


def test_from_config_refuses_a_redis_url() -> None:
    """Limiter.from_config builds in-process limits only; a Redis URL is refused, naming redis_url."""
    with pytest.raises(ConfigurationError) as info:
        Limiter.from_config(RateLimitConfig(redis_url="redis://127.0.0.1:6379/15"), "ns")
    assert info.value.variable == "redis_url"


def test_store_builds_the_redis_twins_under_the_namespace(redis_url: str, redis_client: Any) -> None:
    """A Redis store's limits share its client and are keyed falwrap:{ns}:rate and falwrap:{ns}:inflight."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    store = open_store(redis_url, namespace=namespace)
    limiter = Limiter(store.rate_limiter(600, 2), store.concurrency_limiter(3))
    try:
        assert isinstance(limiter.rate, RedisLeakyBucket)
        assert limiter.rate.key == f"falwrap:{namespace}:rate"
        assert (limiter.rate.rate_per_minute, limiter.rate.burst) == (600, 2)
        assert isinstance(limiter.concurrency, RedisConcurrencyLimit)
        assert limiter.concurrency.key == f"falwrap:{namespace}:inflight"
        assert limiter.concurrency.max_in_flight == 3
        with limiter.acquire(timeout=1) as slot:
            assert limiter.concurrency.in_flight() == 1
            assert slot.renew() is True
        assert limiter.concurrency.in_flight() == 0
    finally:
        store.close()
        redis_client.delete(f"falwrap:{namespace}:rate", f"falwrap:{namespace}:inflight")
