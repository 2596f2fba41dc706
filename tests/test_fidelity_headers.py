"""FakeFal honours fal's request headers: start timeout (checked and enforced), queue priority,
Bearer auth, and refuses malformed values with 400 as fal does."""

from __future__ import annotations

import pytest

from falwrap.testing import FakeFal, JobFailure
from tests.helpers.fal_http import DEV, eventually, raw, submit, wait_completed


@pytest.mark.parametrize("value", ["0.5", "0", "-3", "abc", "nan", "inf", ""])
@pytest.mark.parametrize("host", ["queue.fal.run", "fal.run"])
def test_start_timeout_below_one_second_or_not_a_number_is_400(value: str, host: str) -> None:
    """X-Fal-Request-Timeout must be a finite number of seconds >= 1: otherwise 400 and no job, on both hosts."""
    with FakeFal() as fal:
        response = raw(fal, host=host).post(f"/{DEV}", json={"prompt": "x"}, headers={"X-Fal-Request-Timeout": value})
        assert response.status_code == 400
        assert "X-Fal-Request-Timeout" in response.json()["detail"]
        assert fal.jobs == {}


def test_start_timeout_drops_a_job_still_queued_and_never_bills_it() -> None:
    """A job still queued when its start timeout runs out completes with 504 user timeout, never runs, never bills."""
    with FakeFal(concurrency=1, latency=3.0) as fal:
        client = raw(fal)
        blocker = submit(client)
        handle = submit(client, headers={"X-Fal-Request-Timeout": "1.5"})
        status = wait_completed(client, handle, timeout=10)
        assert status["error_type"] == "request_timeout"
        result = client.get(handle["response_url"])
        assert result.status_code == 504
        assert result.headers["x-fal-request-timeout-type"] == "user"
        assert "x-fal-billable-units" not in result.headers
        view = fal.jobs[handle["request_id"]]
        assert view.started_at is None and view.attempts == 0
        client.put(blocker["cancel_url"])
        assert fal.billing == []


def test_start_timeout_covers_server_retries() -> None:
    """A job fal re-queues after a runner failure still expires at its start deadline, with the user timeout."""
    with FakeFal(concurrency=1, latency=0.4) as fal:
        client = raw(fal)
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503))
        handle = submit(client, headers={"X-Fal-Request-Timeout": "1"})
        status = wait_completed(client, handle, timeout=10)
        assert status["error_type"] == "request_timeout"
        view = fal.jobs[handle["request_id"]]
        assert 1 <= view.attempts <= 3
        assert fal.billing == []


def test_start_timeout_does_not_limit_a_running_job() -> None:
    """Once a runner starts the job the start timeout no longer applies."""
    with FakeFal(latency=1.5) as fal:
        client = raw(fal)
        handle = submit(client, headers={"X-Fal-Request-Timeout": "1"})
        assert wait_completed(client, handle).get("error_type") is None


def test_low_priority_jobs_start_after_normal_ones() -> None:
    """X-Fal-Queue-Priority: low jobs wait behind every normal job, queued before or after them."""
    with FakeFal(concurrency=1, latency=0.15) as fal:
        client = raw(fal)
        low = {"X-Fal-Queue-Priority": "low"}
        blocker = submit(client)
        first_low = submit(client, headers=low)
        normal = submit(client, headers={"X-Fal-Queue-Priority": "normal"})
        second_low = submit(client, headers=low)
        assert [h["queue_position"] for h in (first_low, normal, second_low)] == [0, 0, 2]
        assert client.get(first_low["status_url"]).json()["queue_position"] == 1
        for handle in (blocker, first_low, normal, second_low):
            wait_completed(client, handle)
        starts = {rid: view.started_at for rid, view in fal.jobs.items()}
        order = sorted(starts, key=lambda rid: starts[rid] or 0.0)
        expected = [blocker, normal, first_low, second_low]
        assert order == [h["request_id"] for h in expected]
        assert fal.jobs[first_low["request_id"]].priority == "low"


def test_unknown_priority_is_400() -> None:
    """A priority other than normal or low is refused."""
    with FakeFal() as fal:
        response = raw(fal).post(f"/{DEV}", json={"prompt": "x"}, headers={"X-Fal-Queue-Priority": "urgent"})
        assert response.status_code == 400 and "X-Fal-Queue-Priority" in response.json()["detail"]


def test_bearer_authorization_is_accepted_like_key() -> None:
    """Authorization: Bearer <key> works on queue, sync and platform routes; a wrong bearer is 401."""
    with FakeFal(latency=0.05) as fal:
        bearer = {"Authorization": f"Bearer {fal.key}"}
        client = raw(fal)
        handle = client.post(f"/{DEV}", json={"prompt": "x"}, headers=bearer).json()
        eventually(lambda: client.get(handle["status_url"], headers=bearer).status_code == 200)
        assert client.get(handle["response_url"], headers=bearer).status_code == 200
        run = raw(fal, host="fal.run").post(f"/{DEV}", json={"prompt": "x"}, headers=bearer)
        assert run.status_code == 200
        pricing = client.get("/v1/models/pricing", params={"endpoint_id": DEV}, headers=bearer)
        assert pricing.status_code == 200
        wrong = client.post(f"/{DEV}", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_runner_hint_and_store_io_are_accepted() -> None:
    """X-Fal-Runner-Hint and X-Fal-Store-IO: 0 do not stop a job."""
    with FakeFal(latency=0.05) as fal:
        client = raw(fal)
        handle = submit(client, headers={"X-Fal-Runner-Hint": "runner-7", "X-Fal-Store-IO": "0"})
        assert wait_completed(client, handle).get("error") is None
