"""Submit-then-poll over the journal: any worker sharing the store answers any poll, from the journal once done.

Two clients on one SQLite file stand for two worker processes; FakeFal serves
the queue over real HTTP, and its route counters show which polls asked fal.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falwrap import FalClient, FalConfig, InvalidInputError, RateLimitConfig
from falwrap.contrib.web import JournalJobStore, job_report, job_store_for
from falwrap.journal import JobState
from falwrap.testing import FakeFal, JobFailure
from tests.helpers.webhook_receiver import running_receiver

SCHNELL = "fal-ai/flux/schnell"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """A FakeFal whose jobs take a moment, so a first poll finds them unfinished."""
    with FakeFal(latency=0.3) as emulator:
        yield emulator


def _config(fal: FakeFal, store_url: str, **changes: Any) -> FalConfig:
    return FalConfig(
        api_key=fal.key, base_url=fal.url, store_url=store_url, webhook_jwks_url=fal.webhook_jwks_url,
        rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100, **changes),
    )  # fmt: skip


@pytest.fixture
def workers(fal: FakeFal, tmp_path: Path) -> Iterator[tuple[FalClient, FalClient]]:
    """Two clients sharing one SQLite journal: two workers of one app."""
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    with FalClient(_config(fal, url)) as one, FalClient(_config(fal, url)) as two:
        yield one, two


def _asked(fal: FakeFal) -> int:
    counters = fal.counters
    return counters["status"] + counters["stream"] + counters["result"]


def _poll_until_done(client: FalClient, request_id: str) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + 30
    while (answer := job_report(client, job_store_for(client), request_id))[0] == 202:
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    return answer


def test_the_job_store_of_a_client_is_its_journal(workers: tuple[FalClient, FalClient]) -> None:
    """job_store_for(client) reads the client's own journal, and loads the handle submit() returned."""
    one, _ = workers
    jobs = job_store_for(one)
    assert isinstance(jobs, JournalJobStore)
    assert jobs.journal is one.ledger.journal
    handle = one.submit(SCHNELL, {"prompt": "a lighthouse"})
    jobs.save(handle)
    assert jobs.load(handle.request_id) == handle


def test_any_worker_answers_a_poll_and_the_job_is_recorded_once(
    fal: FakeFal, workers: tuple[FalClient, FalClient]
) -> None:
    """Submitted by one worker, polled by the other until done; then both answer from the journal without HTTP."""
    one, two = workers
    handle = one.submit(SCHNELL, {"prompt": "a lighthouse"})
    status, body = job_report(two, job_store_for(two), handle.request_id)
    assert status == 202
    assert body["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    status, done = _poll_until_done(two, handle.request_id)
    assert status == 200
    assert done["status"] == "COMPLETED"
    assert done["result"]["images"]
    asked = _asked(fal)
    assert job_report(one, job_store_for(one), handle.request_id) == (200, done)
    assert job_report(two, job_store_for(two), handle.request_id) == (200, done)
    assert _asked(fal) == asked
    assert one.stats()["total_calls"] == two.stats()["total_calls"] == 1
    assert one.daily_cost() == fal.billed_total == Decimal("0.003")


def test_a_failed_job_reads_the_same_from_the_first_poll_on(fal: FakeFal, workers: tuple[FalClient, FalClient]) -> None:
    """The poll that fetched a failure and every later poll, in any worker, answer the same FAILED report."""
    one, two = workers
    fal.fail_next_jobs(1, JobFailure("content_policy_violation", detail="flagged by the safety checker"))
    handle = one.submit(SCHNELL, {"prompt": "forbidden"})
    status, first = _poll_until_done(one, handle.request_id)
    assert status == 200
    assert first["status"] == "FAILED"
    assert first["error"]["code"] == "content_policy_violation"
    assert "flagged by the safety checker" in first["error"]["message"]
    assert job_report(two, job_store_for(two), handle.request_id) == (200, first)
    assert one.stats()["failures"] == 1


def test_polls_from_the_journal_alone_never_ask_fal(fal: FakeFal, workers: tuple[FalClient, FalClient]) -> None:
    """ask_fal=False answers PENDING without HTTP until a webhook delivery settles the job, then COMPLETED."""
    one, two = workers
    with running_receiver() as receiver:
        handle = one.submit(SCHNELL, {"prompt": "a lighthouse"}, webhook_url=receiver.url)
        asked = _asked(fal)
        status, body = job_report(two, job_store_for(two), handle.request_id, ask_fal=False)
        assert (status, body["status"], body["queue_position"]) == (202, "PENDING", None)
        delivery = receiver.wait_for(1, timeout=30)[0]
    status, body = job_report(two, job_store_for(two), handle.request_id, ask_fal=False)
    assert (status, body["status"]) == (202, "PENDING")
    outcome = one.handle_webhook(delivery.headers, delivery.body)
    assert outcome.new
    status, body = job_report(two, job_store_for(two), handle.request_id, ask_fal=False)
    assert status == 200
    assert body["status"] == "COMPLETED"
    assert body["result"] == outcome.result
    assert _asked(fal) == asked


def test_an_unknown_or_malformed_id_is_404_without_asking_fal(
    fal: FakeFal, workers: tuple[FalClient, FalClient]
) -> None:
    """An id the journal lacks, or one that is not fal's shape, is 404 UNKNOWN_JOB and nothing is sent."""
    one, _ = workers
    for request_id in ("00000000-0000-0000-0000-000000000000", "../etc/passwd", ""):
        status, body = job_report(one, job_store_for(one), request_id)
        assert status == 404
        assert body["error"]["code"] == "UNKNOWN_JOB"
    assert _asked(fal) == 0


def _wait_until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_starting_worker_leaves_jobs_with_a_webhook_to_their_delivery(fal: FakeFal, tmp_path: Path) -> None:
    """A client starting on the store reconciles a finished poll-style job, not one whose delivery is on its way."""
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    with running_receiver() as receiver, FalClient(_config(fal, url)) as one:
        hooked = one.submit(SCHNELL, {"prompt": "called back"}, webhook_url=receiver.url)
        later = one.submit(SCHNELL, {"prompt": "called back too"}, webhook_url=receiver.url)
        polled = one.submit(SCHNELL, {"prompt": "polled"})
        deliveries = receiver.wait_for(2, timeout=30)
        _wait_until(lambda: fal.jobs[polled.request_id].state == "COMPLETED", "the polled job to end")
        with FalClient(_config(fal, url)) as two:
            journal = two.ledger.journal
            _wait_until(lambda: journal.find(polled.request_id).done, "the start-up reconciliation")  # type: ignore[union-attr]
            for thread in threading.enumerate():
                if thread.name == "falwrap-reconcile":
                    thread.join(timeout=30)
            assert journal.find(hooked.request_id).state is JobState.RUNNING  # type: ignore[union-attr]
            assert journal.find(later.request_id).state is JobState.RUNNING  # type: ignore[union-attr]
            delivery = next(d for d in deliveries if d.header("X-Fal-Webhook-Request-Id") == hooked.request_id)
            assert two.handle_webhook(delivery.headers, delivery.body).new
            # Asked explicitly, reconciliation settles a webhook job too (its delivery may be lost);
            # its report also covers the start-up run it waited for (the polled job).
            report = two.reconcile(timeout=30)
            settled = [job.request_id for job in report.jobs if job.before is JobState.RUNNING]
            assert sorted(settled) == sorted([polled.request_id, later.request_id])
            assert journal.find(later.request_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
            assert two.stats()["total_calls"] == 3


def test_ask_fal_must_be_a_bool(fal: FakeFal, workers: tuple[FalClient, FalClient]) -> None:
    """ask_fal="false" (a query string passed through) is an InvalidInputError naming it; nothing is sent."""
    one, _ = workers
    handle = one.submit(SCHNELL, {"prompt": "a lighthouse"})
    asked = _asked(fal)
    with pytest.raises(InvalidInputError, match="ask_fal: expected True or False, got 'false'") as info:
        job_report(one, job_store_for(one), handle.request_id, ask_fal="false")  # type: ignore[arg-type]
    assert info.value.field == "ask_fal"
    assert _asked(fal) == asked


def _pools() -> int:
    import redis

    gc.collect()
    # type(), not isinstance(): a lazy proxy (Django's settings) evaluates itself when asked its __class__.
    return sum(issubclass(type(o), redis.ConnectionPool) for o in gc.get_objects())


@pytest.mark.redis
def test_one_redis_url_is_one_pool_for_the_clients_limiter_ledger_and_job_store(
    fal: FakeFal, redis_url: str, redis_client: Any
) -> None:
    """A client on a Redis store_url: its rate limiter, concurrency cap, ledger and job store share one pool."""
    fingerprint = FalConfig(api_key=fal.key).key_fingerprint
    before = _pools()
    try:
        with FalClient(_config(fal, redis_url, max_concurrent=4)) as client:
            jobs = job_store_for(client)
            handle = client.submit(SCHNELL, {"prompt": "a lighthouse"})
            status, body = _poll_until_done(client, handle.request_id)
            assert (status, body["status"]) == (200, "COMPLETED")
            assert jobs.load(handle.request_id) == handle
            assert client.limiter.concurrency is not None
            assert client.daily_cost() == Decimal("0.003")
            assert client.ledger.journal.find(handle.request_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
            assert _pools() == before + 1
    finally:
        for key in redis_client.scan_iter(match=f"falwrap:{fingerprint}*", count=1000):
            redis_client.delete(key)
