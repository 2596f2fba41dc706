"""fal's webhooks end to end: gunicorn workers sharing a store settle every job exactly once.

load generator -> gunicorn (4 workers serving an example app) -> FakeFal, and
FakeFal -> gunicorn ``/fal/webhook``: every hop is loopback HTTP between
separate processes. FakeFal delivers each job's outcome twice, half of them
out of order, so most deliveries reach a worker after another worker already
settled the job. The example's ``job_finished`` receiver appends one JSON line
per signal to a file opened with ``O_APPEND``, so signals are counted across
the worker processes.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from contrib_helpers import DJANGO_EXAMPLE, FLASK_EXAMPLE, clear_ambient, fire, free_port, gunicorn, http_json

from falwrap import FalClient, FalConfig
from falwrap.backends import wipe_namespace
from falwrap.catalog import MODEL_CATALOG, estimate_cost
from falwrap.journal import JobState
from falwrap.testing import FakeFal, WebhookFault
from tests.contract.stores import fresh_store

SCHNELL = "fal-ai/flux/schnell"
PROMPT = {"prompt": "a lighthouse at dusk"}
JOBS = 100
#: (gunicorn app, --chdir, webhook path) of each example.
APPS = {
    "flask": ("demo_flask:create_app()", FLASK_EXAMPLE, "/fal/webhook"),
    "django": ("demo_django.wsgi:application", DJANGO_EXAMPLE, "/fal/webhook/"),
}


@pytest.fixture
def fal(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFal]:
    """Half-second jobs, a key unique to the test (it names the store's namespace), fal's retries 2000x faster.

    A job's delivery must not overtake the worker journaling fal's answer to its
    submission (it would find no job); half a second is far more than that takes
    even on a loaded machine, and 32 jobs run at once, so 100 take about 2 s.
    """
    clear_ambient(monkeypatch)
    key = f"hooks-{uuid.uuid4().hex}:{uuid.uuid4().hex}"
    with FakeFal(key=key, latency=0.5, concurrency=32, webhook_time_scale=0.0005) as server:
        yield server


def _finished(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_lines(path: Path, count: int, timeout: float) -> list[dict[str, Any]]:
    """The signal file once it holds ``count`` lines (or whatever it holds at the deadline)."""
    deadline = time.monotonic() + timeout
    while len(lines := _finished(path)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return lines


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("framework", "kind"),
    [("flask", "postgresql"), ("flask", "redis"), ("django", "postgresql"), ("django", "redis")],
)
def test_four_workers_settle_each_delivered_job_exactly_once(
    fal: FakeFal, tmp_path: Path, framework: str, kind: str
) -> None:
    """100 jobs via POST /jobs, each delivered twice, some out of order: one settlement, one signal, ledger == bill."""
    app, chdir, hook = APPS[framework]
    port = free_port()
    signal_file = tmp_path / "finished.jsonl"
    with fresh_store(kind, tmp_path) as store:
        config = FalConfig(api_key=fal.key, base_url=fal.url, store_url=store.url)
        env = {
            "FAL_KEY": fal.key, "FAL_BASE_URL": fal.url, "FALWRAP_ENV_FILE": "", "FALWRAP_STORE_URL": store.url,
            "FAL_REQUESTS_PER_MINUTE": "600000", "FAL_RATE_BURST": "1000",
            "FALWRAP_WEBHOOK_URL": f"http://127.0.0.1:{port}{hook}", "FALWRAP_WEBHOOK_JWKS_URL": fal.webhook_jwks_url,
            "DEMO_FINISHED_JOBS_FILE": str(signal_file),
        }  # fmt: skip
        # Two copies of every delivery; deliveries of two jobs released together, the later job's first.
        fal.inject_webhook(WebhookFault(copies=2, reorder_batch=4), times=JOBS)
        try:
            with gunicorn(app, chdir, env, workers=4, threads=2, port=port) as server:
                answers = fire(f"{server.url}/jobs", JOBS, PROMPT)
                assert [s for s, _, _ in answers] == [202] * JOBS, [b for s, b, _ in answers if s != 202][:1]
                ids = {body["request_id"] for _, body, _ in answers}
                assert len(ids) == JOBS
                assert fal.webhooks.wait_idle(240), fal.webhooks
                lines = _wait_for_lines(signal_file, JOBS, timeout=30)
                # Nothing but the webhooks told the workers how the jobs ended: no worker asked fal.
                asked = fal.counters
                assert (asked["status"], asked["stream"], asked["result"]) == (0, 0, 0), asked
                # A finished job is answered from the journal by any worker, with no HTTP to fal.
                polls = [http_json("GET", f"{server.url}/jobs/{request_id}") for request_id in sorted(ids)[:8]]
                assert fal.counters == asked
                webhook_workers = server.served_by(200, hook)
            _check_journal(config, ids, fal)
        finally:
            wipe_namespace(store.url, config.key_fingerprint)

    assert all(status == 200 and body["status"] == "COMPLETED" for status, body, _ in polls), polls[:1]
    # Exactly one job_finished signal per job, whichever worker got which copy.
    assert Counter(line["request_id"] for line in lines) == Counter(dict.fromkeys(ids, 1))
    assert {line["state"] for line in lines} == {"succeeded"}
    assert len(webhook_workers) >= 2, webhook_workers
    # Every copy was answered 2xx: two deliveries per job, duplicates acknowledged.
    assert fal.webhooks.deliveries == 2 * JOBS
    assert set(fal.webhooks.attempts_per_request()) == ids
    assert _inversions(fal, ids) >= JOBS // 4


def _check_journal(config: FalConfig, ids: set[str], fal: FakeFal) -> None:
    """Every job settled succeeded with its one record; the journal's day cost is FakeFal's bill."""
    with FalClient(config) as client:
        journal = client.ledger.journal
        entries = [journal.find(request_id) for request_id in sorted(ids)]
        assert all(entry is not None for entry in entries)
        states = Counter((entry.state, entry.recorded) for entry in entries if entry is not None)
        assert states == {(JobState.SUCCEEDED, True): JOBS}, states
        assert client.stats()["total_calls"] == JOBS
        bill = fal.billed_total
        assert bill == JOBS * estimate_cost(MODEL_CATALOG[SCHNELL], PROMPT)
        assert client.daily_cost() == bill
        assert client.stats()["total_cost_usd"] == bill
        assert sum((entry.cost for entry in entries if entry is not None), Decimal(0)) == bill


def _inversions(fal: FakeFal, ids: set[str]) -> int:
    """Pairs of jobs (by completion at FakeFal) whose first deliveries left in the opposite order."""
    first_sent: dict[str, float] = {}
    for attempt in fal.webhooks.attempts:
        first_sent[attempt.request_id] = min(attempt.sent_at, first_sent.get(attempt.request_id, attempt.sent_at))
    jobs = fal.jobs
    by_completion = sorted(ids, key=lambda rid: jobs[rid].completed_at or 0.0)
    return sum(1 for a, b in itertools.pairwise(by_completion) if first_sent[b] < first_sent[a])
