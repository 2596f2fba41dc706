"""The limiter, the ledger, budgets and live prices, seen through FalClient against FakeFal.

Threads share one client; processes share Redis (FALWRAP_REDIS_URL), as
gunicorn workers would.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from falwrap import (
    BackendUnavailableError,
    BudgetExceededError,
    FalClient,
    FalConfig,
    FalwrapError,
    JobHandle,
    RateLimitConfig,
    RateLimitTimeout,
    RetryConfig,
    Timeouts,
    set_testing,
)
from falwrap.catalog import MODEL_CATALOG, estimate_cost
from falwrap.testing import FakeFal, Fault, JobFailure
from tests.helpers.timing import max_granted_per

ROOT = Path(__file__).resolve().parent.parent
SCHNELL = "fal-ai/flux/schnell"
DEV = "fal-ai/flux/dev"

#: How late a submission may reach FakeFal after the limiter granted it, on a loaded 2-core machine.
ARRIVAL_JITTER = 0.1


def _run_threads(n: int, target: Any) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def work() -> None:
        barrier.wait()
        try:
            target()
            outcome = "ok"
        except FalwrapError as exc:
            outcome = type(exc).__name__
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_submissions_are_paced_by_the_limiter() -> None:
    """6 threads at 300 requests/minute: FakeFal sees submissions about 0.2 s apart, never bunched."""
    with FakeFal(latency=0.01) as fal:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FALWRAP_"))}
        env.update(FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FAL_REQUESTS_PER_MINUTE="300", PYTHONPATH=str(ROOT))
        # The client runs in its own process, as in an app: FakeFal's arrival stamps then
        # do not wait for the GIL behind the client's own threads.
        (outcomes,) = _workers(1, env, threads=6, calls=1, model=SCHNELL)
        assert outcomes == {"ok": 6}
        times = fal.submit_times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 6
        # The limiter grants exactly 0.2 s apart (tests/test_limiter.py proves it on its own
        # clock); loopback delivery and thread scheduling delay each arrival by up to ARRIVAL_JITTER
        # (measured at 10 ms with both cores saturated, allowed 10 times that for xdist workers
        # sharing them). Without the limiter the gaps would be ~1 ms; at twice the rate the span 0.5 s.
        assert min(gaps) >= 0.2 - ARRIVAL_JITTER, gaps
        assert times[-1] - times[0] >= 5 * 0.2 - ARRIVAL_JITTER


def test_concurrency_cap_holds_for_the_life_of_each_job() -> None:
    """With max_concurrent=2, FakeFal never has more than 2 of this client's jobs in flight."""
    with FakeFal(latency=0.15, concurrency=8) as fal:
        rate = RateLimitConfig(requests_per_minute=600_000, burst=100, max_concurrent=2)
        with FalClient(FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=rate)) as client:
            outcomes = _run_threads(8, lambda: client.image("a cat", model=SCHNELL))
            assert client.limiter.concurrency is not None
            assert client.limiter.concurrency.in_flight() == 0
        assert outcomes == {"ok": 8}
        assert fal.max_in_flight == 2


def test_limiter_wait_longer_than_the_deadline_fails_fast() -> None:
    """When the next slot is beyond the call's deadline, RateLimitTimeout comes at once, nothing sent."""
    with FakeFal(latency=0.01) as fal:
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, timeouts=Timeouts(image=5.0),
            rate_limit=RateLimitConfig(requests_per_minute=1),
        )  # fmt: skip
        with FalClient(config) as client:
            client.image("first")
            started = time.monotonic()
            with pytest.raises(RateLimitTimeout):
                client.image("second")
            assert time.monotonic() - started < 2.0  # at once, even under load: not after the 5 s deadline
            assert client.ledger.records()[0].error_code == "RATE_LIMIT_TIMEOUT"
        assert fal.counters["submit"] == 1


def test_budget_race_between_threads_admits_exactly_what_fits() -> None:
    """8 threads, a budget for exactly 2 images: FakeFal accepts 2, six get BudgetExceededError."""
    with FakeFal(latency=0.05) as fal:
        per_image = estimate_cost(MODEL_CATALOG[DEV], {})
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, daily_budget_usd=2 * per_image,
            rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100),
        )  # fmt: skip
        with FalClient(config) as client:
            outcomes = _run_threads(8, lambda: client.image("a cat", model=DEV))
            assert outcomes == {"ok": 2, "BudgetExceededError": 6}
            assert fal.submissions == 2
            assert client.daily_cost() <= config.daily_budget_usd
            assert client.daily_cost() == fal.billed_total
            assert client.stats()["total_calls"] == 8
            assert client.ledger.reserved() == 0


def test_budget_error_says_what_was_spent_and_sends_nothing() -> None:
    """The budget error names spent, reserved, estimate and budget; no request reaches fal."""
    with FakeFal(latency=0.01) as fal:
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, daily_budget_usd=Decimal("0.001"),
            rate_limit=RateLimitConfig(requests_per_minute=600_000),
        )  # fmt: skip
        with FalClient(config) as client, pytest.raises(BudgetExceededError) as info:
            client.image("a cat", model=SCHNELL)
        assert info.value.budget == Decimal("0.001")
        assert info.value.estimate == Decimal("0.003")
        assert "0.003" in str(info.value)
        assert sum(fal.counters.values()) == 0


def test_soak_ledger_matches_fal_billing_to_the_micro_dollar() -> None:
    """2,000 calls from 16 threads with ~10% faults: one record per call; after reconcile() ledger == bill."""
    rng = random.Random(7)
    with set_testing(True), FakeFal(latency=0.0, concurrency=64) as fal:
        routes = ["submit", "stream", "status", "result"]
        faults = [Fault.http(503), Fault.reset(), Fault.rate_limited(), Fault.nginx(502)]
        for _ in range(120):
            fal.inject(rng.choice(routes), rng.choice(faults), times=1)
        fal.fail_next_jobs(40, JobFailure("content_policy_violation", status=422, retryable=False))
        fal.fail_next_jobs(40, JobFailure("runner_disconnected", status=503, retryable=True))
        config = FalConfig(
            api_key=fal.key, base_url=fal.url,
            retry=RetryConfig(max_retries=3, base_delay=0.01, max_delay=0.02),
            rate_limit=RateLimitConfig(requests_per_minute=6_000_000, burst=1000),
        )  # fmt: skip
        with FalClient(config) as client:
            sizes = ["square", "square_hd", "landscape_16_9", {"width": 1536, "height": 1024}]
            per_thread = 125

            def calls() -> None:
                for i in range(per_thread):
                    with contextlib.suppress(FalwrapError):
                        client.image("a cat", model=rng.choice([DEV, SCHNELL]), size=sizes[i % 4])

            _run_threads(16, calls)
            records = client.ledger.records()
            stats = client.stats()
            assert stats["total_calls"] == 2000
            assert len(records) == 2000
            # 40 content-policy failures, plus retryable ones that ran out of retries.
            assert stats["failures"] >= 40, stats
            # Jobs whose call ended without an outcome are charged at their estimate until reconciled.
            assert client.daily_cost() >= fal.billed_total
            report = client.reconcile()
            assert report.unknown == report.still_running == 0, report
            assert client.daily_cost() == fal.billed_total
            assert client.stats()["total_cost_usd"] == fal.billed_total
            assert client.ledger.reserved() == 0


def test_live_pricing_uses_fal_price_for_estimates_and_cost() -> None:
    """With live_pricing on, a price changed at fal's pricing API is what the call costs."""
    with FakeFal(latency=0.01) as fal:
        fal.set_price(SCHNELL, Decimal("0.005"))
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, live_pricing=True,
            rate_limit=RateLimitConfig(requests_per_minute=600_000),
        )  # fmt: skip
        with FalClient(config) as client:
            result = client.image("a cat", model=SCHNELL, size="square")
        assert result.cost_usd == Decimal("0.005")
        assert fal.billed_total == Decimal("0.005")
        assert fal.counters["pricing"] == 1


def test_selection_through_the_client() -> None:
    """Without a model, budget/quality/urgency choose one, and the result names it."""
    with FakeFal(latency=0.01) as fal:
        config = FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=600_000))
        with FalClient(config) as client:
            draft = client.image("a cat", budget="0.01", quality="draft", urgency="high")
            premium = client.image("a cat", quality="premium")
            video = client.video("waves", quality="production")
        assert draft.model == SCHNELL
        assert MODEL_CATALOG[premium.model].quality in {"high", "ultra"}
        assert video.model.startswith("fal-ai/kling-video")
        assert fal.jobs[draft.request_id].model_id == SCHNELL


# --- many processes sharing Redis -----------------------------------------------------------------


def _workers(n: int, env: dict[str, str], threads: int, calls: int, model: str) -> list[Counter[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.worker", str(threads), str(calls), model],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(Counter(json.loads(out.strip().splitlines()[-1])))
    return results


@pytest.fixture
def shared_env(redis_url: str, redis_client: Any) -> Iterator[dict[str, str]]:
    """Environment for worker processes sharing Redis; the key's Redis keys are deleted afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FALWRAP_"))}
    env["FALWRAP_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = str(ROOT)
    yield env
    fingerprint = env.get("_FINGERPRINT")
    if fingerprint:
        for key in redis_client.scan_iter(match=f"falwrap:{fingerprint}*", count=1000):
            redis_client.delete(key)


@pytest.mark.redis
def test_budget_holds_across_processes(shared_env: dict[str, str]) -> None:
    """4 processes x 8 threads share one Redis ledger with a budget for exactly 10 jobs: FakeFal accepts 10."""
    with FakeFal(latency=0.05, concurrency=32) as fal:
        per_image = estimate_cost(MODEL_CATALOG[SCHNELL], {})
        shared_env.update(
            FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FAL_DAILY_BUDGET_USD=str(10 * per_image),
            FAL_REQUESTS_PER_MINUTE="6000000", FAL_RATE_BURST="1000",
            _FINGERPRINT=FalConfig(api_key=fal.key).key_fingerprint,
        )  # fmt: skip
        results = _workers(4, shared_env, threads=8, calls=1, model=SCHNELL)
        total = sum(results, Counter())
        assert total == {"ok": 10, "BudgetExceededError": 22}
        assert fal.submissions == 10
        assert fal.billed_total == 10 * per_image


@pytest.mark.redis
def test_concurrency_cap_holds_across_processes(shared_env: dict[str, str]) -> None:
    """4 processes x 8 threads with a shared cap of 3: FakeFal never sees more than 3 jobs in flight."""
    with FakeFal(latency=0.1, concurrency=32) as fal:
        shared_env.update(
            FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FAL_MAX_CONCURRENT="3",
            FAL_REQUESTS_PER_MINUTE="6000000", FAL_RATE_BURST="1000", FAL_TIMEOUT_IMAGE="60000",
            _FINGERPRINT=FalConfig(api_key=fal.key).key_fingerprint,
        )  # fmt: skip
        results = _workers(4, shared_env, threads=8, calls=1, model=SCHNELL)
        assert sum(results, Counter()) == {"ok": 32}
        assert fal.max_in_flight == 3


@pytest.mark.redis
def test_rate_holds_across_processes(shared_env: dict[str, str]) -> None:
    """4 processes sharing 1200 requests/minute (20/s): at most 21 submissions reach FakeFal in any 1 s."""
    with FakeFal(latency=0.01, concurrency=32) as fal:
        shared_env.update(
            FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FAL_REQUESTS_PER_MINUTE="1200",
            _FINGERPRINT=FalConfig(api_key=fal.key).key_fingerprint,
        )  # fmt: skip
        results = _workers(4, shared_env, threads=2, calls=5, model=SCHNELL)
        assert sum(results, Counter()) == {"ok": 40}
        times = sorted(fal.submit_times)
        # Arrival stamps lag their grants (process scheduling, loopback) and can bunch: counted in
        # windows narrowed by that lag, at most 21 grants fell in any 1 s (20/s plus the burst).
        busiest = max_granted_per(times, 1.0)
        assert busiest <= 21, busiest
        # 40 grants at 20/s span at least 39 intervals (minus arrival jitter).
        assert times[-1] - times[0] >= 39 * 0.05 - 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
def test_redis_going_away_gives_a_typed_error_not_a_hang(redis_url: str) -> None:
    """A Redis that dies after start-up: the next call fails fast with a typed error, nothing sent to fal."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with FakeFal(latency=0.01) as fal:
            rate = RateLimitConfig(requests_per_minute=600_000)
            config = FalConfig(
                api_key=fal.key, base_url=fal.url, rate_limit=rate, store_url=f"redis://127.0.0.1:{port}/0"
            )
            with FalClient(config) as client:
                client.image("a cat", model=SCHNELL)
                proc.kill()
                proc.wait()
                started = time.monotonic()
                with pytest.raises(BackendUnavailableError) as info:
                    client.image("a cat", model=SCHNELL)
                assert time.monotonic() - started < 5
                assert "Redis" in str(info.value)
            assert fal.counters["submit"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_config_evolve_keeps_budget_exact() -> None:
    """A budget set through attrs.evolve stays an exact Decimal on the client's ledger."""
    config = attrs.evolve(FalConfig(api_key="a:b"), daily_budget_usd="0.30")
    with FalClient(config) as client:
        assert client.ledger.daily_budget_usd == Decimal("0.30")


@pytest.mark.redis
def test_submit_in_one_process_result_in_another(redis_url: str, redis_client: Any) -> None:
    """A job submitted by one client and fetched by another (two workers) is charged once, recorded once."""
    with FakeFal(latency=0.05) as fal:
        rate = RateLimitConfig(requests_per_minute=600_000)
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, rate_limit=rate, store_url=redis_url, daily_budget_usd=Decimal("1")
        )
        try:
            with FalClient(config) as a, FalClient(config) as b:
                handle = a.submit(SCHNELL, {"prompt": "x"})
                assert handle.job_id is not None
                # Charged from acceptance, in the journal both workers share.
                assert b.daily_cost() == Decimal("0.003")
                assert b.ledger.reserved() == 0
                stored = json.loads(json.dumps(handle.to_dict()))
                assert b.result(JobHandle.from_dict(stored))["images"]
                assert b.daily_cost() == Decimal("0.003")
                # A second worker fetching the same result reads the journal: no HTTP, no second charge.
                results_before = fal.counters.get("result", 0)
                assert a.result(handle)["images"]
                assert fal.counters.get("result", 0) == results_before
                assert a.daily_cost() == Decimal("0.003")
                assert a.stats()["total_calls"] == 1
                assert fal.billed_total == Decimal("0.003")
        finally:
            for key in redis_client.scan_iter(match=f"falwrap:{config.key_fingerprint}*", count=1000):
                redis_client.delete(key)


@pytest.mark.redis
def test_shared_slot_lease_is_kept_for_a_long_silent_job(redis_client: Any, redis_namespace: str) -> None:
    """A job longer than the slot's lease, with no status events, keeps its Redis slot; then frees it."""
    from falwrap.backends.redis import RedisConcurrencyLimit
    from falwrap.limiter import LeakyBucket, Limiter

    concurrency = RedisConcurrencyLimit(redis_client, f"{redis_namespace}:inflight", 1, lease_seconds=0.6)
    limiter = Limiter(LeakyBucket(600_000, 100), concurrency)
    with FakeFal(latency=2.0) as fal:
        config = FalConfig(api_key=fal.key, base_url=fal.url)
        with FalClient(config, limiter=limiter) as client:
            seen: list[int] = []
            job = threading.Thread(target=client.image, args=("a long one",), kwargs={"model": SCHNELL})
            job.start()
            for _ in range(6):
                time.sleep(0.25)
                seen.append(concurrency.in_flight())
            job.join()
            assert seen == [1] * 6
            assert concurrency.in_flight() == 0
        assert fal.submissions == 1
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name == "falwrap-lease-keeper"]
