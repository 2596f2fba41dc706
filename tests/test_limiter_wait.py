"""limiter_wait_at_most: a call that would wait too long for the limiter is refused at once, costing nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from falwrap import ConfigurationError, FalClient, FalConfig, RateLimitConfig, RateLimitTimeout
from falwrap.limits import limiter_wait_at_most, within_wait_bound
from falwrap.testing import FakeFal

SCHNELL = "fal-ai/flux/schnell"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """A FakeFal whose jobs finish at once."""
    with FakeFal(latency=0.01) as fake:
        yield fake


def _client(fal: FakeFal, *, rate: float = 6.0, max_concurrent: int | None = None) -> FalClient:
    rate_limit = RateLimitConfig(requests_per_minute=rate, burst=1, max_concurrent=max_concurrent)
    return FalClient(FalConfig(api_key=fal.key, base_url=fal.url, rate_limit=rate_limit))


def test_a_rate_wait_over_the_bound_raises_at_once_and_reserves_nothing(fal: FakeFal) -> None:
    """At 6/min the second call's slot is ~10 s away: refused at once with ``wait``, nothing sent, no slot taken."""
    with _client(fal) as client:
        client.image("first", model=SCHNELL)
        started = time.monotonic()
        with limiter_wait_at_most(1.0), pytest.raises(RateLimitTimeout) as caught:
            client.image("second", model=SCHNELL)
        assert time.monotonic() - started < 5.0  # not the ~10 s the slot is away
        assert caught.value.wait is not None
        assert 1.0 < caught.value.wait <= 10.0
        assert fal.submissions == 1
        # Nothing was reserved: the next slot is still the one the refused call was told about.
        left = client.limiter.rate.try_acquire()
        assert 0.0 < left <= caught.value.wait
        records = client.ledger.journal.records()
        assert [r.error_code for r in records if not r.success] == ["RATE_LIMIT_TIMEOUT"]


def test_a_wait_within_the_bound_is_waited_out(fal: FakeFal) -> None:
    """At 60/min the next slot is ~1 s away, inside a 5 s bound: the call waits and succeeds."""
    with _client(fal, rate=60.0) as client:
        client.image("first", model=SCHNELL)
        with limiter_wait_at_most(5.0):
            result = client.image("second", model=SCHNELL)
        assert result.request_id in fal.jobs
        assert fal.submissions == 2


def test_a_refused_call_leaves_its_idempotency_key_free(fal: FakeFal) -> None:
    """A key whose call was refused by the bound is not bound to anything: the same key later submits once."""
    with _client(fal, rate=30.0) as client:
        client.image("first", model=SCHNELL)
        with limiter_wait_at_most(0.2), pytest.raises(RateLimitTimeout):
            client.image("keyed", model=SCHNELL, idempotency_key="task-1")
        result = client.image("keyed", model=SCHNELL, idempotency_key="task-1")
        again = client.image("keyed", model=SCHNELL, idempotency_key="task-1")
        assert again.request_id == result.request_id
        assert fal.submissions == 2


def test_a_concurrency_place_is_waited_for_only_up_to_the_bound(fal: FakeFal) -> None:
    """All places held: the call gives up after the bound with ``wait=None``, and nothing is sent."""
    with _client(fal, rate=600.0, max_concurrent=1) as client:
        assert client.limiter.concurrency is not None
        with client.limiter.concurrency.acquire(timeout=1.0):
            started = time.monotonic()
            with limiter_wait_at_most(0.3), pytest.raises(RateLimitTimeout) as caught:
                client.image("blocked", model=SCHNELL)
            assert time.monotonic() - started >= 0.3
        assert caught.value.wait is None
        assert fal.submissions == 0


def test_the_bound_belongs_to_its_thread_and_nested_blocks_keep_the_shorter() -> None:
    """Another thread sees no bound; an inner longer bound does not lift an outer shorter one."""
    seen: list[float] = []
    with limiter_wait_at_most(2.0):
        with limiter_wait_at_most(30.0):
            assert within_wait_bound(60.0) == 2.0
        with limiter_wait_at_most(0.5):
            assert within_wait_bound(60.0) == 0.5
        worker = threading.Thread(target=lambda: seen.append(within_wait_bound(60.0)))
        worker.start()
        worker.join()
        assert within_wait_bound(1.0) == 1.0
    assert seen == [60.0]
    assert within_wait_bound(60.0) == 60.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, True, "5", None])
def test_an_invalid_bound_is_a_configuration_error_naming_it(bad: object) -> None:
    """NaN, infinity, negatives, booleans and non-numbers are refused, naming the caller's name for the value."""
    bound = limiter_wait_at_most(bad, name="fal_max_wait")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="fal_max_wait=") as caught, bound:
        pass
    assert caught.value.variable == "fal_max_wait"
