"""What is specific to RedisLedger: its constructor, its client and its keys' bookkeeping (real Redis, db 15).

Everything a ledger does on any store is in the contract suite,
``tests/contract/test_ledger.py``, which runs it over the Redis journal too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from falwrap.backends.redis_journal import RedisJournal
from falwrap.backends.redis_ledger import RedisLedger
from falwrap.ledger import JournalLedger, Ledger
from tests.helpers.records import T0, rec

pytestmark = pytest.mark.redis


@pytest.fixture
def make(redis_client: Any, redis_namespace: str) -> Callable[..., RedisLedger]:
    """Build RedisLedgers on the test namespace with a fixed clock."""

    def build(**kwargs: Any) -> RedisLedger:
        kwargs.setdefault("clock", lambda: T0)
        return RedisLedger(redis_client, redis_namespace, **kwargs)

    return build


def test_day_totals_expire(make: Callable[..., RedisLedger], redis_client: Any, redis_namespace: str) -> None:
    """Each day's hash carries the configured TTL so old days clean themselves up."""
    ledger = make(day_ttl=3600)
    ledger.record(rec())
    ttl = redis_client.ttl(f"falwrap:{redis_namespace}:day:{T0.date().isoformat()}")
    assert 3500 < ttl <= 3600


def test_records_list_is_capped_at_max_records(
    make: Callable[..., RedisLedger], redis_client: Any, redis_namespace: str
) -> None:
    """The shared record list keeps the newest max_records; counts still cover every call."""
    ledger = make(max_records=3)
    originals = [rec(duration=i, request_id=f"r{i}", metadata={"i": i}) for i in range(5)]
    for r in originals:
        ledger.record(r)
    assert ledger.max_records == 3
    assert ledger.records() == originals[:1:-1]
    assert redis_client.llen(f"falwrap:{redis_namespace}:records") == 3
    assert ledger.stats()["total_calls"] == 5


def test_hold_keys_never_expire_under_a_live_hold(
    make: Callable[..., RedisLedger], redis_client: Any, redis_namespace: str
) -> None:
    """Hold bookkeeping has no key TTL (a short hold cannot drop a long one); each hold lapses at its own expiry."""
    long_hold = make(reservation_ttl=600).reserve(Decimal("1"))
    short_hold = make(reservation_ttl=1).reserve(Decimal("2"))
    holds, expiry = f"falwrap:{redis_namespace}:holds", f"falwrap:{redis_namespace}:holds:expiry"
    assert redis_client.pttl(holds) == -1
    assert redis_client.pttl(expiry) == -1
    t0_us = (T0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    assert redis_client.zscore(expiry, long_hold.id) == t0_us + 600_000_000
    assert redis_client.zscore(expiry, short_hold.id) == t0_us + 1_000_000
    assert make().reserved() == Decimal("3")
    short_hold.release()
    long_hold.release()
    assert redis_client.exists(holds, expiry) == 0


def test_constructor_is_compatible_and_leaves_the_client_open(redis_client: Any, redis_namespace: str) -> None:
    """RedisLedger(redis, namespace, ...) is a JournalLedger over a RedisJournal; close() keeps its client."""
    ledger = RedisLedger(
        redis_client, redis_namespace, daily_budget_usd=Decimal("3"), clock=lambda: T0, reservation_ttl=None
    )
    assert isinstance(ledger, JournalLedger)
    assert isinstance(ledger.journal, RedisJournal)
    assert ledger.redis is redis_client
    assert ledger.namespace == redis_namespace
    assert ledger.daily_budget_usd == Decimal("3")
    assert ledger.reservation_ttl is None
    ledger.close()
    assert redis_client.ping()
    with pytest.warns(DeprecationWarning, match="metrics"):
        RedisLedger(redis_client, redis_namespace, metrics=False)


def test_redis_ledger_satisfies_ledger_protocol(make: Callable[..., RedisLedger]) -> None:
    """RedisLedger is a Ledger, interchangeable with CostLedger for the client."""
    ledger: Ledger = make()
    assert isinstance(ledger, Ledger)


def test_invalid_configuration_is_refused(redis_client: Any) -> None:
    """An empty namespace, a float budget and a zero record cap are refused at construction."""
    with pytest.raises(ValueError, match="namespace"):
        RedisLedger(redis_client, "")
    with pytest.raises(TypeError):
        RedisLedger(redis_client, "ns", daily_budget_usd=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_records"):
        RedisLedger(redis_client, "ns", max_records=0)


def test_decoded_responses_client_works(redis_url: str, redis_namespace: str) -> None:
    """A client built with decode_responses=True gives the same results."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ledger = RedisLedger(client, redis_namespace, clock=lambda: T0)
        ledger.record(rec("0.25", duration=10))
        hold = ledger.reserve(Decimal("0.5"))
        assert ledger.daily_cost() == Decimal("0.25")
        assert ledger.reserved() == Decimal("0.5")
        assert ledger.stats()["p50_duration_ms"] == 10
        assert ledger.records()[0].cost_usd == Decimal("0.25")
        hold.release()
    finally:
        client.close()


def test_duration_window_is_configurable(make: Callable[..., RedisLedger]) -> None:
    """RedisLedger(duration_window=10) computes p50/p95 over the last 10 calls only."""
    ledger = make(duration_window=10)
    for ms in range(50):
        ledger.record(rec(duration=ms))
    stats = ledger.stats()
    assert stats["total_calls"] == 50
    assert stats["p50_duration_ms"] == pytest.approx(44.5)
    assert stats["avg_duration_ms"] == pytest.approx(24.5)
