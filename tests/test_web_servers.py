"""The example apps under real servers: threads sharing one client, and gunicorn workers sharing Redis.

Every request goes over loopback HTTP: load generator -> web server -> falwrap -> FakeFal, each
in its own process, so that no GIL is shared between the server under test and the emulator.
FakeFal stamps each submit's arrival (``submit_times``), so the spacing the
rate limiter enforced is measured where fal would see it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from contrib_helpers import (
    DJANGO_EXAMPLE,
    FLASK_EXAMPLE,
    Server,
    clear_ambient,
    fire,
    gaps,
    gunicorn,
    http_json,
    werkzeug,
)

from falwrap import FalConfig
from falwrap.catalog import MODEL_CATALOG, estimate_cost
from falwrap.testing import FakeFal

SCHNELL = "fal-ai/flux/schnell"
PROMPT = {"prompt": "a lighthouse at dusk"}
#: 1200 a minute: one submission every 50 ms.
RATE = 1200
SPACING = 60 / RATE
#: Arrival jitter allowed at FakeFal. The limiter spaces its grants exactly; between a
#: grant and FakeFal's arrival stamp each request waits for its thread to get the GIL
#: (in the web worker and in FakeFal), which under the full suite on 2 cores was seen
#: at up to ~42 ms for one request. So the checks count submissions per window instead
#: of trusting the single closest pair; a broken limiter puts all of them in one window.
JITTER = 0.05
WINDOW = 0.5
#: How late a granted request may reach FakeFal when its threads wait for a CPU: seen up to
#: ~0.2 s with the suite in four parallel workers on 2 cores. Requests granted that much
#: before a window can arrive inside it.
BUNCHING = 0.25

#: (gunicorn app, --chdir) of each example.
APPS = {
    "django": ("demo_django.wsgi:application", DJANGO_EXAMPLE),
    "flask": ("demo_flask:create_app()", FLASK_EXAMPLE),
}


def _assert_spaced(times: list[float], expected: int) -> None:
    assert len(times) == expected
    ordered = sorted(times)
    busiest = max(sum(1 for t in ordered if start <= t < start + WINDOW) for start in ordered)
    # The grants of WINDOW + BUNCHING seconds (plus one at the edge) can arrive in one window
    # (16 here); a broken limiter puts all of them (32) in one window.
    assert busiest <= round((WINDOW + BUNCHING) / SPACING) + 1, f"{busiest} submissions within {WINDOW} s"
    # The whole run cannot be faster than the rate: jitter only moves its two ends.
    assert ordered[-1] - ordered[0] >= (expected - 1) * SPACING - JITTER
    assert sorted(gaps(times))[len(times) // 2] >= SPACING - 0.005, "median spacing below the rate"


@pytest.fixture
def fal(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFal]:
    """A FakeFal with short jobs and a key unique to the test (it names the Redis keys)."""
    clear_ambient(monkeypatch)
    with FakeFal(key=f"web-{uuid.uuid4().hex}:{uuid.uuid4().hex}", latency=0.05, concurrency=8) as server:
        yield server


@pytest.fixture
def redis_cleanup(redis_client: Any) -> Iterator[Callable[[str], None]]:
    """Register API keys whose Redis keys (``falwrap:<fingerprint>*``) are deleted after the test."""
    keys: list[str] = []
    yield keys.append
    for api_key in keys:
        prefix = f"falwrap:{FalConfig(api_key=api_key).key_fingerprint}"
        for name in redis_client.scan_iter(match=f"{prefix}*", count=1000):
            redis_client.delete(name)


def _env(fal: FakeFal, **extra: str) -> dict[str, str]:
    return {
        "FAL_KEY": fal.key,
        "FAL_BASE_URL": fal.url,
        "FAL_REQUESTS_PER_MINUTE": str(RATE),
        "FALWRAP_ENV_FILE": "",
        **extra,
    }


# --- threads sharing one client ------------------------------------------------------------------


@pytest.mark.slow
def test_flask_threaded_server_serves_32_concurrent_image_calls_within_the_rate(fal: FakeFal) -> None:
    """werkzeug, threaded: 32 simultaneous /image calls all succeed, 50 ms apart at fal, 32 in the ledger."""
    with werkzeug(_env(fal)) as server:
        answers = fire(f"{server.url}/image", 32, PROMPT)
        status, stats, _ = http_json("GET", f"{server.url}/stats")
    assert [s for s, _, _ in answers] == [200] * 32, [b for s, b, _ in answers if s != 200][:1]
    assert len({body["request_id"] for _, body, _ in answers}) == 32
    assert fal.submissions == 32
    _assert_spaced(fal.submit_times, 32)
    assert status == 200
    assert stats["stats"]["total_calls"] == stats["stats"]["successes"] == 32
    assert Decimal(stats["daily_cost_usd"]) == 32 * estimate_cost(MODEL_CATALOG[SCHNELL], PROMPT)


@pytest.mark.slow
def test_django_under_gunicorn_threads_serves_32_concurrent_image_calls_within_the_rate(fal: FakeFal) -> None:
    """gunicorn, 1 worker x 32 threads: 32 simultaneous /image calls succeed, 50 ms apart, /stats counts 32."""
    app, chdir = APPS["django"]
    with gunicorn(app, chdir, _env(fal), workers=1, threads=32) as server:
        answers = fire(f"{server.url}/image", 32, PROMPT)
        status, stats, _ = http_json("GET", f"{server.url}/stats")
    assert [s for s, _, _ in answers] == [200] * 32, [b for s, b, _ in answers if s != 200][:1]
    assert fal.submissions == 32
    _assert_spaced(fal.submit_times, 32)
    assert status == 200
    assert stats["stats"]["total_calls"] == stats["stats"]["successes"] == 32
    assert stats["shared"] is False


# --- processes sharing Redis ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("framework", sorted(APPS))
def test_gunicorn_workers_share_budget_and_rate_through_redis(
    fal: FakeFal, redis_url: str, redis_cleanup: Callable[[str], None], framework: str
) -> None:
    """4 gunicorn workers, 40 simultaneous /image calls, budget of 10 images: fal accepts exactly 10, 30 get 429."""
    redis_cleanup(fal.key)
    unit = estimate_cost(MODEL_CATALOG[SCHNELL], PROMPT)
    budget = 10 * unit
    app, chdir = APPS[framework]
    env = _env(fal, FALWRAP_REDIS_URL=redis_url, FAL_DAILY_BUDGET_USD=str(budget))
    with gunicorn(app, chdir, env, workers=4, threads=1) as server:
        answers = fire(f"{server.url}/image", 40, PROMPT)
        _, stats, _ = http_json("GET", f"{server.url}/stats")

    # Sync workers (one request at a time each), so every worker takes a share of the burst.
    assert len(server.served_by(200, "/image") + server.served_by(429, "/image")) >= 2
    statuses = Counter(status for status, _, _ in answers)
    assert statuses == {200: 10, 429: 30}, [b for s, b, _ in answers if s not in {200, 429}][:1]
    refused = [(body, headers) for status, body, headers in answers if status == 429]
    assert {body["error"]["code"] for body, _ in refused} == {"BUDGET_EXCEEDED"}
    assert all(f"Daily budget of ${budget.normalize()}" in body["error"]["message"] for body, _ in refused)
    assert all(int(headers["Retry-After"]) > 0 for _, headers in refused)
    assert fal.submissions == 10
    assert sum((record.cost for record in fal.billing), Decimal(0)) == budget
    _assert_spaced(fal.submit_times, 10)
    # The ledger is shared: any worker's /stats sees every worker's calls and the spend.
    assert stats["shared"] is True
    assert stats["stats"]["total_calls"] == 40
    assert stats["stats"]["successes"] == 10
    assert Decimal(stats["daily_cost_usd"]) == budget


@pytest.mark.slow
def test_gunicorn_workers_without_redis_each_spend_their_own_budget(fal: FakeFal) -> None:
    """The control for the Redis test (and why W001 exists): without Redis, 4 workers overspend a 10-image budget."""
    budget = 10 * estimate_cost(MODEL_CATALOG[SCHNELL], PROMPT)
    app, chdir = APPS["django"]
    with gunicorn(app, chdir, _env(fal, FAL_DAILY_BUDGET_USD=str(budget)), workers=4, threads=1) as server:
        answers = fire(f"{server.url}/image", 40, PROMPT)
    accepted = sum(1 for status, _, _ in answers if status == 200)
    assert len(server.served_by(200, "/image")) >= 2
    assert accepted > 10
    assert fal.submissions == accepted
    assert sum((record.cost for record in fal.billing), Decimal(0)) > budget


def test_examples_are_where_the_servers_look(tmp_path: Path) -> None:
    """The gunicorn targets exist (a moved example fails here, not as a startup timeout)."""
    assert (DJANGO_EXAMPLE / "demo_django" / "wsgi.py").is_file()
    assert (FLASK_EXAMPLE / "demo_flask.py").is_file()


def test_ready_markers_sharing_one_line_are_all_counted() -> None:
    """Two workers' markers written into one pipe line ("...6938falwrap-worker-ready 6939") count as two."""
    server = Server("")
    server.add("falwrap-worker-ready 6937\n")
    server.add("falwrap-worker-ready 6938falwrap-worker-ready 6939\n")
    server.add("[INFO] Booting worker with pid: 6940 falwrap-worker-ready 6940\n")
    server.add("falwrap-worker-ready 6937\n")
    assert server.marked("falwrap-worker-ready") == ["6937", "6938", "6939", "6940"]
    server.add("falwrap-access <6938> 200 POST /imagefalwrap-access <6939> 200 POST /image\n")
    assert server.served_by(200, "/image") == Counter({"6938": 1, "6939": 1})
