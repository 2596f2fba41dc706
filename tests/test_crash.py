"""A process killed with SIGKILL at any point of a call loses nothing: the next process reconciles it.

A child process sharing a SQLite file (and, separately, PostgreSQL) with the test
is killed at submit (fal's answer in flight), while its job is queued, while it
runs, and after fal completed it (result not yet fetched). A fresh client on the
same store then runs ``reconcile()``: the ledger equals FakeFal's bill to the
micro-dollar, the job's result is in the journal, and ``falwrap stats`` in a
third process shows the same spend.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from falwrap import FalClient, FalConfig, RateLimitConfig, set_testing
from falwrap.journal import JobState
from falwrap.testing import FakeFal, Fault
from tests.contract.stores import fresh_store
from tests.helpers.cli import command_env, falwrap, json_out
from tests.test_idempotency import _spawn

SCHNELL = "fal-ai/flux/schnell"
DEV = "fal-ai/flux/dev"
PHASES = ("submit", "queue", "running", "completed")


@pytest.fixture(params=("sqlite", "postgresql"))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as factory:
        yield factory.url


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _state_of_child_job(fal: FakeFal, model: str) -> str | None:
    states = [view.state for view in fal.jobs.values() if view.model_id == model]
    return states[0] if states else None


@pytest.mark.parametrize("phase", PHASES)
def test_a_killed_process_is_reconciled_by_the_next(store_url: str, phase: str, tmp_path: Path) -> None:
    """SIGKILL at each phase; a fresh client reconciles: ledger == bill, the result is in the journal,
    and ``falwrap stats`` shows the same spend and calls."""
    with set_testing(True), FakeFal(concurrency=1) as fal:
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, store_url=store_url,
            rate_limit=RateLimitConfig(requests_per_minute=600_000, burst=100),
        )  # fmt: skip
        fal.set_latency(0.6, SCHNELL)
        fal.set_latency(4.0, DEV)
        with FalClient(config) as parent:
            blocker = parent.submit(DEV, {"prompt": "holds the only runner"}) if phase == "queue" else None
            if phase == "submit":
                fal.inject("submit", Fault.after(Fault.stall(30, then="respond")))
            if phase == "completed":
                fal.set_latency(0.05, SCHNELL)
                fal.inject("stream", Fault.stall(30, then="respond"))
            child = _spawn(fal, store_url, "-")
            try:
                if phase == "submit":
                    _wait_for(lambda: fal.counters.get("submit", 0) >= (2 if blocker else 1), "fal to accept")
                elif phase == "queue":
                    _wait_for(lambda: _state_of_child_job(fal, SCHNELL) == "IN_QUEUE", "the job to queue")
                elif phase == "running":
                    _wait_for(lambda: _state_of_child_job(fal, SCHNELL) == "IN_PROGRESS", "the job to run")
                else:
                    _wait_for(lambda: _state_of_child_job(fal, SCHNELL) == "COMPLETED", "the job to complete")
                    time.sleep(0.1)
            finally:
                child.send_signal(signal.SIGKILL)
                child.communicate(timeout=30)
            fal.clear_faults()
            if blocker is not None:
                assert parent.result(blocker, timeout=10)["images"]
        # A fresh process's client on the same store.
        with FalClient(config) as fresh:
            deadline = time.monotonic() + 20
            while True:
                report = fresh.reconcile()
                if report.still_running == report.unknown == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert report.still_running == report.unknown == 0, report
            assert fresh.daily_cost() == fal.billed_total
            assert fal.submissions == (2 if blocker else 1)
            job = next(e for e in fresh.ledger.journal.jobs() if e.endpoint == SCHNELL)
            assert job.state is JobState.SUCCEEDED
            assert job.result is not None and job.result["images"]
            assert fresh.stats()["total_calls"] >= 1
            calls = fresh.stats()["total_calls"]
        # And the command line, a third process, shows it from the same store.
        shown = falwrap("stats", "--json", cwd=tmp_path, env=command_env(
            tmp_path / "data", FAL_KEY=fal.key, FALWRAP_STORE_URL=store_url))  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        stats = json_out(shown)
        assert Decimal(str(stats["today_cost_usd"])) == fal.billed_total
        assert stats["total_calls"] == calls
