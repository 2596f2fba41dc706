"""What a new user and a reviewer broke in the call path, each pinned by a test against FakeFal.

Deadlines follow the model, not the method; a per-output budget binds an explicit
model; a failed job seen by two workers is recorded once; a hung Redis cannot hold
a call past its deadline; a host without a status stream costs one wasted request,
not one per job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from falwrap import (
    BackendUnavailableError,
    FalClient,
    FalConfig,
    FalTimeoutError,
    InvalidInputError,
    ModelError,
    RateLimitConfig,
    Timeouts,
    set_testing,
)
from falwrap.testing import FakeFal, Fault
from tests.helpers.proxy import Proxy

KLING = "fal-ai/kling-video/v1/standard/text-to-video"
ULTRA = "fal-ai/flux-pro/v1.1-ultra"
SCHNELL = "fal-ai/flux/schnell"
FAST = RateLimitConfig(requests_per_minute=600_000, burst=100)


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with set_testing(True), FakeFal() as emulator:
        yield emulator


def test_run_and_result_of_a_video_model_get_the_video_deadline(fal: FakeFal) -> None:
    """run()/submit()+result() of a Kling endpoint wait the video deadline, not the image one."""
    fal.set_latency(1.2, KLING)
    timeouts = Timeouts(image=0.5, video_short=5.0)
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url, timeouts=timeouts, rate_limit=FAST)) as c:
        assert c.run(KLING, {"prompt": "waves", "duration": "5"})["video"]
        handle = c.submit(KLING, {"prompt": "waves", "duration": "5"})
        assert c.result(handle)["video"]
        # An image model through run() keeps the image deadline.
        fal.set_latency(1.2, SCHNELL)
        with pytest.raises(FalTimeoutError, match=r"did not finish within 0\.5 s"):
            c.run(SCHNELL, {"prompt": "a cat"})
    assert fal.submissions == 3


def test_a_per_output_budget_binds_an_explicit_model(fal: FakeFal) -> None:
    """budget=0.01 with the $0.06 ultra model is refused before anything is sent, naming both."""
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url)) as c:
        with pytest.raises(InvalidInputError) as info:
            c.image("a cat", model=ULTRA, budget=0.01)
        assert info.value.field == "budget"
        assert ULTRA in str(info.value)
        assert "0.06" in str(info.value) and "0.01" in str(info.value)
        assert sum(fal.counters.values()) == 0
        assert c.image("a cat", model=ULTRA, budget=0.06).cost_usd == Decimal("0.06")


@pytest.mark.redis
def test_a_cancelled_job_seen_by_two_workers_is_recorded_once(fal: FakeFal, redis_url: str) -> None:
    """A cancels, B asks for the result: one record, one failure, the cost counted once."""
    fal.set_latency(2.0, SCHNELL)
    config = FalConfig(api_key=fal.key, base_url=fal.url, store_url=redis_url, rate_limit=FAST)
    try:
        with FalClient(config) as a, FalClient(config) as b:
            handle = a.submit(SCHNELL, {"prompt": "a cat"})
            assert a.cancel(handle)
            with pytest.raises(ModelError) as info:
                b.result(handle)
            assert info.value.error_code == "client_cancelled"
            stats = b.stats()
            assert (stats["total_calls"], stats["failures"]) == (1, 1)
            assert a.stats()["total_calls"] == 1
    finally:
        from falwrap.backends import wipe_namespace

        wipe_namespace(redis_url, config.key_fingerprint)


@pytest.mark.redis
def test_a_hung_redis_fails_a_call_within_its_deadline(fal: FakeFal, redis_url: str) -> None:
    """Redis stops answering: a call with a 1 s deadline gets BackendUnavailableError in about that time."""
    import redis

    host = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = Proxy((host["host"], host["port"]))
    url = f"redis://127.0.0.1:{proxy.port}/15"
    config = FalConfig(api_key=fal.key, base_url=fal.url, store_url=url, rate_limit=FAST)
    try:
        with FalClient(config) as c:
            c.image("a cat", model=SCHNELL)
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                c.image("a dog", model=SCHNELL, timeout=1.0)
            assert time.monotonic() - started < 1.5
        assert fal.submissions == 1
    finally:
        proxy.close()
        from falwrap.backends import wipe_namespace

        wipe_namespace(redis_url, config.key_fingerprint)


def test_a_host_without_a_status_stream_is_not_asked_for_one_per_job(fal: FakeFal) -> None:
    """The stream answers 404 once: the following jobs poll at once, without a wasted request each."""
    fal.inject("stream", Fault.http(404, json={"detail": "Not Found"}), times=100)
    with FalClient(FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=FAST)) as c:
        for _ in range(5):
            c.image("a cat", model=SCHNELL)
    assert fal.counters["stream"] == 1
    assert fal.submissions == 5
