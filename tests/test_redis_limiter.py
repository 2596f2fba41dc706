"""Tests specific to falwrap.backends.redis_limiter, against the real Redis on 127.0.0.1 (database 15).

Redis TIME and key expiry, keys, and a server that goes away or hangs. What every
store's limits share is in ``tests/contract/`` (the ``redis`` kind).
"""

from __future__ import annotations

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
from falwrap.errors import BackendUnavailableError, ConfigurationError
from falwrap.limiter import Limiter
from tests.helpers.proxy import Proxy

pytestmark = pytest.mark.redis

#: Nothing listens on port 1 of the loopback interface: connections are refused at once.
UNREACHABLE = "redis://127.0.0.1:1/15"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client built the way the limiters build theirs (short timeouts, one retry)."""
    c = redis_client_from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[Proxy]:
    """A relay to the test Redis, closed afterwards."""
    kwargs = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    p = Proxy((kwargs["host"], kwargs["port"]))
    yield p
    p.close()


# --- RedisLeakyBucket ------------------------------------------------------------------------------


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


# --- Configuration and failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [lambda c: RedisLeakyBucket(c, "", 60), lambda c: RedisConcurrencyLimit(c, "", 1)], ids=["rate", "cap"]
)
def test_an_empty_key_is_refused(client: redis.Redis, build: Any) -> None:
    """An empty Redis key raises ConfigurationError naming ``key`` (the other values: tests/contract)."""
    with pytest.raises(ConfigurationError) as info:
        build(client)
    assert info.value.variable == "key"


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
