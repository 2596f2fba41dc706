"""Tests for falwrap.backends.redis_store: one pool for everything, closing what it opened, wiping (Redis db 15)."""

from __future__ import annotations

import gc
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis

from falwrap.backends import open_journal, open_store, wipe_namespace
from falwrap.backends.base import Store
from falwrap.backends.redis_journal import RedisJournal
from falwrap.backends.redis_limiter import RedisConcurrencyLimit, RedisLeakyBucket
from falwrap.backends.redis_store import RedisStore
from falwrap.config import FalConfig
from falwrap.contrib.web import JournalJobStore, job_store_for
from falwrap.errors import ConfigurationError, RateLimitTimeout
from falwrap.ledger import JournalLedger
from falwrap.limiter import Limiter
from falwrap.results import JobHandle
from tests.contract.test_journal import T0, accepted, intent
from tests.helpers.records import rec

pytestmark = pytest.mark.redis

#: Nothing listens on port 1 of the loopback interface: connections are refused at once.
UNREACHABLE = "redis://127.0.0.1:1/15"


def _pools() -> int:
    gc.collect()
    # type(), not isinstance(): a lazy proxy (Django's settings) evaluates itself when asked its __class__.
    return sum(issubclass(type(o), redis.ConnectionPool) for o in gc.get_objects())


def _handle(rid: str) -> JobHandle:
    base = f"http://127.0.0.1:1/fal-ai/flux/requests/{rid}"
    return JobHandle(
        request_id=rid, model_id="fal-ai/flux/schnell", status_url=f"{base}/status", response_url=base,
        cancel_url=f"{base}/cancel", submitted_at=datetime.now(timezone.utc), estimate_usd=Decimal("0.003"),
    )  # fmt: skip


def _listed(observer: Any, client_id: int) -> bool:
    return bool(observer.client_list(client_id=[client_id]))


def test_one_url_opens_one_pool_for_journal_limits_and_job_store(redis_url: str, redis_namespace: str) -> None:
    """The journal, a ledger over it, both limits and the web job store all use the store's one connection pool."""
    before = _pools()
    store = open_store(redis_url, namespace=redis_namespace)
    try:
        assert isinstance(store, RedisStore)
        assert isinstance(store, Store)
        ledger = JournalLedger(store.journal)
        with ledger.reserve(Decimal("0.01")) as hold:
            ledger.record(rec("0.01"), reservation=hold)
        limiter = Limiter(store.rate_limiter(600, 2), store.concurrency_limiter(3))
        with limiter.acquire(timeout=5):
            pass
        jobs = job_store_for(FalConfig(api_key="k"), store=store)
        assert isinstance(jobs, JournalJobStore)
        assert jobs.journal is store.journal
        job = intent()
        store.journal.open_job(job, budget=None, now=T0)
        store.journal.accept(job.job_id, accepted("r1"), now=T0)
        loaded = jobs.load("r1")
        assert loaded is not None
        assert loaded.job_id == job.job_id
        assert store.journal.client is store.client
        assert _pools() == before + 1
    finally:
        store.close()


def test_keys_of_every_part_live_under_the_namespace(redis_url: str, redis_namespace: str, redis_client: Any) -> None:
    """The limits are keyed falwrap:<ns>:rate and :inflight, the journal the rest; the job store adds no keys."""
    store = open_store(redis_url, namespace=redis_namespace)
    try:
        rate = store.rate_limiter(600, 2)
        concurrency = store.concurrency_limiter(3)
        assert isinstance(rate, RedisLeakyBucket)
        assert isinstance(concurrency, RedisConcurrencyLimit)
        assert rate.key == f"falwrap:{redis_namespace}:rate"
        assert concurrency.key == f"falwrap:{redis_namespace}:inflight"
        assert (rate.rate_per_minute, rate.burst) == (600, 2)
        assert concurrency.max_in_flight == 3
        with concurrency.acquire(timeout=1) as slot:
            assert concurrency.in_flight() == 1
            assert slot.renew() is True
        assert concurrency.in_flight() == 0
        assert rate.try_acquire() == 0.0
        job_store_for(FalConfig(api_key="k"), store=store).save(_handle("r1"))
        store.journal.add_record(rec())
        keys = {k.decode() for k in redis_client.scan_iter(match=f"*{redis_namespace}*")}
        assert f"falwrap:{redis_namespace}:rate" in keys
        # The job store is a view of the journal: it writes no keys of its own.
        assert not any(":jobs:" in k for k in keys)
        assert all(k.startswith(f"falwrap:{redis_namespace}:") for k in keys)
    finally:
        store.close()


def test_two_stores_on_one_namespace_share_the_concurrency_cap(redis_url: str, redis_namespace: str) -> None:
    """A place held through one store (one process) is not free for another store on the same namespace."""
    one = open_store(redis_url, namespace=redis_namespace)
    two = open_store(redis_url, namespace=redis_namespace)
    try:
        with one.concurrency_limiter(1).acquire(timeout=1), pytest.raises(RateLimitTimeout):
            two.concurrency_limiter(1).acquire(timeout=0)
        two.concurrency_limiter(1).acquire(timeout=1).release()
    finally:
        one.close()
        two.close()


def test_close_closes_the_pool_it_opened(redis_url: str, redis_namespace: str, redis_client: Any) -> None:
    """Closing a store from a URL (or its journal, opened alone) drops its connections; closing twice is harmless."""
    journal = open_journal(redis_url, namespace=redis_namespace)
    assert isinstance(journal, RedisJournal)
    client_id = journal.client.client_id()
    assert _listed(redis_client, client_id)
    journal.close()
    deadline = time.monotonic() + 10
    while _listed(redis_client, client_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _listed(redis_client, client_id)
    journal.close()


def test_close_leaves_a_client_handed_in(redis_url: str, redis_namespace: str, redis_client: Any) -> None:
    """A store over a client it was given does not close that client."""
    client = redis.Redis.from_url(redis_url)
    try:
        store = RedisStore(client, namespace=redis_namespace)
        client_id = client.client_id()
        store.close()
        store.journal.close()
        assert client.ping()
        assert _listed(redis_client, client_id)
    finally:
        client.close()


def test_unreachable_redis_at_open_is_a_configuration_error() -> None:
    """A server that refuses connections fails open_store quickly with ConfigurationError, naming the server only."""
    start = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        open_store("redis://:hunter2@127.0.0.1:1/15", namespace="ns")
    assert info.value.variable == "FALWRAP_STORE_URL"
    assert "127.0.0.1:1" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError):
        RedisStore.from_url(UNREACHABLE, namespace="ns")
    assert time.monotonic() - start < 2.0


def test_malformed_url_and_empty_namespace_are_refused(redis_url: str) -> None:
    """A URL redis-py cannot parse is a ConfigurationError; an empty namespace a ValueError."""
    with pytest.raises(ConfigurationError) as info:
        RedisStore.from_url("redis://127.0.0.1:notaport/0", namespace="ns")
    assert info.value.variable == "FALWRAP_STORE_URL"
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(redis.Redis.from_url(redis_url), namespace="")


def test_repr_names_the_server_without_its_password() -> None:
    """The store's repr shows host, port, db and namespace, never the URL's password."""
    store = RedisStore(redis.Redis.from_url("redis://:hunter2@127.0.0.1:6379/15"), namespace="ns1")
    assert repr(store) == "RedisStore(127.0.0.1:6379/15, namespace='ns1')"
    assert "hunter2" not in repr(store.journal)


def test_wipe_deletes_one_namespace_only(redis_url: str, redis_namespace: str, redis_client: Any) -> None:
    """wipe_namespace() removes every key of a namespace; another one (even matching it as a glob) stays."""
    star, other = f"{redis_namespace}*", f"{redis_namespace}x"
    for namespace in (star, other):
        store = open_store(redis_url, namespace=namespace)
        store.journal.add_record(rec())
        store.rate_limiter(60, 1).try_acquire()
        store.close()
    wipe_namespace(redis_url, star)
    assert list(redis_client.scan_iter(match=f"falwrap:{redis_namespace}\\*:*")) == []
    left = {k.decode() for k in redis_client.scan_iter(match=f"falwrap:{other}:*")}
    assert f"falwrap:{other}:rate" in left
    assert f"falwrap:{other}:records" in left
    wipe_namespace(redis_url, other)
    assert list(redis_client.scan_iter(match=f"falwrap:{other}:*")) == []


def test_a_store_survives_fork(redis_url: str, redis_namespace: str) -> None:
    """A store opened before os.fork works in the child (redis-py reconnects) and both see one journal."""
    import multiprocessing

    store = open_store(redis_url, namespace=redis_namespace)
    try:
        store.journal.add_record(rec("0.5"))
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=lambda: store.journal.add_record(rec("0.25")))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        assert store.journal.daily_cost(rec().day) == Decimal("0.75")
    finally:
        store.close()


def test_namespaces_are_isolated(redis_url: str) -> None:
    """Two namespaces on one server never see each other's spend."""
    a, b = f"falwrap-test:{uuid.uuid4().hex[:12]}", f"falwrap-test:{uuid.uuid4().hex[:12]}"
    one, two = open_store(redis_url, namespace=a), open_store(redis_url, namespace=b)
    try:
        one.journal.add_record(rec("1"))
        assert one.journal.daily_cost(rec().day) == Decimal("1")
        assert two.journal.daily_cost(rec().day) == 0
    finally:
        one.close()
        two.close()
        wipe_namespace(redis_url, a)
        wipe_namespace(redis_url, b)
