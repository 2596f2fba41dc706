"""What is specific to RedisJournal: retention, key layout, stored JSON and failures (real Redis, db 15).

Its behaviour as a journal is the contract suite, ``tests/contract/test_journal.py``.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis

from falwrap.backends.codec import dump_entry, load_entry
from falwrap.backends.redis_journal import RedisJournal
from falwrap.backends.redis_limiter import redis_client_from_url
from falwrap.errors import BackendUnavailableError
from falwrap.journal import Accepted, JobEntry, JobIntent, JobState, Settlement
from falwrap.records import CallRecord

pytestmark = pytest.mark.redis

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)
FLUX = "fal-ai/flux/dev"


def intent(at: datetime = T0, *, key: str | None = None, key_ttl: float = 60, owner: str = "gone") -> JobIntent:
    return JobIntent(
        job_id=uuid.uuid4().hex,
        endpoint=FLUX,
        operation="generate",
        arguments={"prompt": "a cat"},
        estimate=Decimal("0.025"),
        owner=owner,
        created_at=at,
        idempotency_key=key,
        key_expires_at=at + timedelta(seconds=key_ttl) if key else None,
    )


def accepted(request_id: str) -> Accepted:
    base = f"http://127.0.0.1:1/fal-ai/flux/requests/{request_id}"
    return Accepted(request_id, f"{base}/status", base, f"{base}/cancel")


def record(job_id: str, at: datetime) -> CallRecord:
    return CallRecord(at, FLUX, "generate", 100.0, Decimal("0.025"), True, request_id=None, job_id=job_id)


def done(cost: str = "0.025") -> Settlement:
    return Settlement(JobState.SUCCEEDED, cost=Decimal(cost), cost_final=True, result={"images": []})


@pytest.fixture
def journal(redis_client: Any, redis_namespace: str) -> RedisJournal:
    """A journal on the test namespace keeping finished jobs one hour."""
    return RedisJournal(redis_client, namespace=redis_namespace, job_ttl=3600)


def test_finished_jobs_are_forgotten_after_job_ttl_and_open_ones_never(
    journal: RedisJournal, redis_client: Any, redis_namespace: str
) -> None:
    """A later open_job removes jobs finished over job_ttl ago with their ids and key; money and open jobs stay."""
    stale, _ = journal.open_job(intent(key="k-stale"), budget=None, now=T0)
    journal.accept(stale.job_id, accepted("rid-stale"), now=T0)
    journal.finish(stale.job_id, settlement=done(), record=record(stale.job_id, T0), now=T0)
    orphan, _ = journal.open_job(intent(), budget=None, now=T0)
    journal.accept(orphan.job_id, accepted("rid-orphan"), now=T0)
    recent_at = T0 + timedelta(minutes=90)
    recent, _ = journal.open_job(intent(recent_at), budget=None, now=recent_at)
    journal.finish(recent.job_id, settlement=done("0.03"), now=recent_at)

    later = T0 + timedelta(hours=2)
    fresh, _ = journal.open_job(intent(later), budget=None, now=later)

    assert journal.get(stale.job_id) is None
    assert journal.find("rid-stale") is None
    assert redis_client.exists(f"falwrap:{redis_namespace}:idem:k-stale") == 0
    assert journal.get(recent.job_id) is not None
    assert journal.find("rid-orphan") is not None
    assert [e.job_id for e in journal.unsettled(now=later)] == [orphan.job_id, fresh.job_id]
    assert stale.job_id not in {e.job_id for e in journal.jobs()}
    assert len(journal.jobs()) == 3
    assert journal.daily_cost(T0.date()) == Decimal("0.080")
    assert journal.stats()["total_calls"] == 1


def test_idempotency_keys_expire_at_their_expiry_as_a_duration(
    journal: RedisJournal, redis_client: Any, redis_namespace: str
) -> None:
    """A key's Redis TTL is key_expires_at - now, whatever the caller's clock says the date is."""
    journal.open_job(intent(key="k1", key_ttl=60), budget=None, now=T0)
    ttl_ms = redis_client.pttl(f"falwrap:{redis_namespace}:idem:k1")
    assert 55_000 < ttl_ms <= 60_000


def test_every_key_lives_under_the_namespace_prefix(
    journal: RedisJournal, redis_client: Any, redis_namespace: str
) -> None:
    """A job's whole life, a hold, a heartbeat and a record write only falwrap:<namespace>: keys."""
    journal.heartbeat("me", ttl=30, now=T0)
    journal.hold("h", Decimal("0.01"), budget=None, model_id=None, expires_at=None, now=T0)
    entry, _ = journal.open_job(intent(key="k", owner="me"), budget=Decimal("1"), now=T0)
    journal.accept(entry.job_id, accepted("rid"), now=T0)
    journal.finish(entry.job_id, settlement=done(), record=record(entry.job_id, T0), now=T0)
    keys = {k.decode() for k in redis_client.scan_iter(match=f"*{redis_namespace}*")}
    prefix = f"falwrap:{redis_namespace}:"
    assert all(k.startswith(prefix) for k in keys)
    assert {k[len(prefix) :].split(":")[0] for k in keys} >= {
        "job", "jobs", "finished", "requests", "idem", "owners", "holds", "day", "totals", "records", "durations",
    }  # fmt: skip


def test_entries_are_stored_as_json_that_round_trips_every_field(
    journal: RedisJournal, redis_client: Any, redis_namespace: str
) -> None:
    """The stored JSON gives back an equal JobEntry, every optional field set."""
    entry = JobEntry(
        job_id="j1",
        endpoint=FLUX,
        operation="generate",
        arguments={"prompt": "ü", "n": 2**60, "x": 0.1},
        fingerprint="f" * 64,
        estimate=Decimal("0.025000"),
        owner=None,
        created_at=T0,
        state=JobState.CANCELLED,
        cost=Decimal("0.012345"),
        cost_final=True,
        billable_units=Decimal("1.5"),
        idempotency_key="key",
        key_expires_at=T0 + timedelta(hours=1),
        webhook_url="http://127.0.0.1:1/hook",
        request_id="rid",
        status_url="s",
        response_url="r",
        cancel_url="c",
        gateway_request_id="g",
        accepted_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=2),
        result={"video": {"url": "http://127.0.0.1:1/v.mp4"}, "seed": None},
        error_code="client_cancelled",
        error_message="cancelled",
        recorded=True,
    )
    assert load_entry(dump_entry(entry)) == entry
    opened, _ = journal.open_job(intent(), budget=None, now=T0)
    stored = redis_client.hget(f"falwrap:{redis_namespace}:job:{opened.job_id}", "json")
    assert load_entry(stored) == opened == journal.get(opened.job_id)


def test_redis_failures_at_call_time_are_backend_unavailable_quickly() -> None:
    """With Redis gone, reads and writes raise BackendUnavailableError naming the server, never the password."""
    client = redis_client_from_url("redis://:hunter2@127.0.0.1:1/15")
    journal = RedisJournal(client, namespace="unreachable")
    start = time.monotonic()
    calls = [
        lambda: journal.daily_cost(T0.date()),
        lambda: journal.open_job(intent(), budget=None, now=T0),
        lambda: journal.hold("h", Decimal("1"), budget=None, model_id=None, expires_at=None, now=T0),
        lambda: journal.finish("j", now=T0),
        journal.stats,
    ]
    for call in calls:
        with pytest.raises(BackendUnavailableError) as info:
            call()
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        assert "127.0.0.1:1/15" in str(info.value)
        assert "hunter2" not in str(info.value)
    assert time.monotonic() - start < 5.0
    client.close()


def test_invalid_settings_are_refused(redis_client: Any) -> None:
    """An empty namespace and non-positive sizes or TTLs are refused at construction."""
    with pytest.raises(ValueError, match="namespace"):
        RedisJournal(redis_client, namespace="")
    for name in ("max_records", "duration_window", "day_ttl", "job_ttl"):
        with pytest.raises(ValueError, match=name):
            RedisJournal(redis_client, namespace="ns", **{name: 0})
