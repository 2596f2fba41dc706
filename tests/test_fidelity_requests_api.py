"""FakeFal's platform requests API lists an endpoint's requests from its own jobs, as fal's
GET api.fal.ai/v1/models/requests/by-endpoint does, including jobs whose submit answer was lost,
with filters, pages, payloads, and scripted lag, gaps and failures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from falwrap.testing import FakeFal, Fault, JobFailure
from tests.helpers import shapes
from tests.helpers.fal_http import DEV, SCHNELL, raw, submit, wait_completed

PATH = "/v1/models/requests/by-endpoint"


def listing(fal: FakeFal, **params: Any) -> httpx.Response:
    return raw(fal, host="api.fal.ai").get(PATH, params={"endpoint_id": DEV, **params})


def test_lists_the_endpoints_requests_newest_first_in_fals_shape() -> None:
    """Completed, failed and running jobs of the endpoint are listed with times, status code and duration."""
    with FakeFal(concurrency=1, latency=0.05) as fal:
        client = raw(fal)
        ok = submit(client)
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422))
        failed = submit(client)
        submit(client, SCHNELL)
        wait_completed(client, failed)
        fal.set_latency(5)
        running = submit(client)
        answer = listing(fal).json()
        shapes.check(answer, shapes.REQUESTS, "requests")
        items = answer["items"]
        assert [item["request_id"] for item in items] == [running["request_id"], failed["request_id"], ok["request_id"]]
        assert [item["status_code"] for item in items] == [None, 422, 200]
        assert items[2]["duration"] > 0 and items[2]["endpoint_id"] == DEV
        assert items[0]["ended_at"] is None
        assert "json_input" not in items[2]
        assert (answer["has_more"], answer["next_cursor"]) == (False, None)
        client.put(running["cancel_url"])


def test_status_filter_and_request_id() -> None:
    """status=success|user_error|error selects by status class; request_id finds one request."""
    with FakeFal(latency=0.02) as fal:
        client = raw(fal)
        ok = submit(client)
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422))
        user = submit(client)
        fal.fail_next_jobs(1, JobFailure("internal_server_error", status=500))
        server = submit(client)
        for handle in (ok, user, server):
            wait_completed(client, handle)
        ids = {s: [i["request_id"] for i in listing(fal, status=s).json()["items"]] for s in shapes.REQUESTS_STATUSES}
        assert ids == {
            "success": [ok["request_id"]],
            "user_error": [user["request_id"]],
            "error": [server["request_id"]],
        }
        (one,) = listing(fal, request_id=user["request_id"]).json()["items"]
        assert one["status_code"] == 422


def test_pages_with_limit_and_cursor_cover_every_request_once() -> None:
    """limit and cursor page through all requests without repeats, even while new ones arrive."""
    with FakeFal(latency=0.01) as fal:
        client = raw(fal)
        handles = [submit(client) for _ in range(7)]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = listing(fal, **params).json()
            seen += [item["request_id"] for item in page["items"]]
            submit(client)  # a newer job must not shift the pages
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        assert seen == [h["request_id"] for h in reversed(handles)]


def test_payloads_expand_and_store_io() -> None:
    """expand=payloads adds json_input and json_output; X-Fal-Store-IO: 0 leaves them null."""
    with FakeFal(latency=0.02) as fal:
        client = raw(fal)
        stored = submit(client, DEV, {"prompt": "kept", "seed": 4})
        private = submit(client, DEV, {"prompt": "secret"}, headers={"X-Fal-Store-IO": "0"})
        wait_completed(client, stored)
        wait_completed(client, private)
        items = {i["request_id"]: i for i in listing(fal, expand="payloads").json()["items"]}
        assert items[stored["request_id"]]["json_input"] == {"prompt": "kept", "seed": 4}
        assert items[stored["request_id"]]["json_output"]["seed"] == 4
        assert items[private["request_id"]]["json_input"] is None
        assert items[private["request_id"]]["json_output"] is None


def test_a_job_whose_submit_answer_was_lost_is_listed() -> None:
    """A submit accepted and then lost on the way back (Fault.after) still shows up in the listing."""
    with FakeFal(latency=0.02) as fal:
        fal.inject("submit", Fault.after(Fault.reset()))
        with pytest.raises(httpx.TransportError):
            raw(fal).post(f"/{DEV}", json={"prompt": "lost"})
        (rid,) = fal.jobs
        (item,) = listing(fal, expand="payloads").json()["items"]
        assert (item["request_id"], item["json_input"]) == (rid, {"prompt": "lost"})


def test_time_window() -> None:
    """start and end (ISO 8601) bound sent_at; the default window is the last 24 hours."""
    with FakeFal(latency=0.02) as fal:
        handle = submit(raw(fal))
        now = datetime.now(timezone.utc)
        later = (now + timedelta(hours=1)).isoformat()
        assert listing(fal, start=later).json()["items"] == []
        assert len(listing(fal, end=(now - timedelta(hours=1)).isoformat()).json()["items"]) == 0
        window = {"start": (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"), "end": later}
        assert [i["request_id"] for i in listing(fal, **window).json()["items"]] == [handle["request_id"]]


def test_scripted_lag_and_missing_jobs() -> None:
    """Fault.lag hides jobs newer than N seconds; Fault.omit leaves given jobs out; each for one request."""
    with FakeFal(latency=0.02) as fal:
        first, second = submit(raw(fal)), submit(raw(fal))
        fal.inject("requests", Fault.lag(60))
        assert listing(fal).json()["items"] == []
        fal.inject("requests", Fault.omit(first["request_id"]))
        assert [i["request_id"] for i in listing(fal).json()["items"]] == [second["request_id"]]
        assert len(listing(fal).json()["items"]) == 2
        with pytest.raises(ValueError, match="requests"):
            fal.inject("status", Fault.lag(1))


@pytest.mark.parametrize(("fault", "status"), [(Fault.http(503), 503), (Fault.http(401), 401), (Fault.http(403), 403)])
def test_scripted_failures(fault: Fault, status: int) -> None:
    """The requests route takes the usual faults: 5xx, 401, 403."""
    with FakeFal() as fal:
        fal.inject("requests", fault)
        assert listing(fal).status_code == status
        assert listing(fal).status_code == 200
        assert fal.counters["requests"] == 2


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 101},
        {"limit": 0},
        {"limit": "many"},
        {"status": "failed"},
        {"start": "yesterday"},
        {"cursor": "!!"},
    ],
)
def test_invalid_parameters_are_400(params: dict[str, Any]) -> None:
    """A bad limit, status, time or cursor is a 400 in the platform error shape."""
    with FakeFal() as fal:
        response = listing(fal, **params)
        assert response.status_code == 400
        assert set(response.json()["error"]) == {"type", "message", "docs_url", "request_id"}


def test_auth_and_unknown_endpoint() -> None:
    """Without the key the API answers 401; an endpoint FakeFal does not serve is 404; endpoint_id is required."""
    with FakeFal() as fal:
        assert raw(fal, key="wrong:key").get(PATH, params={"endpoint_id": DEV}).status_code == 401
        assert raw(fal).get(PATH, params={"endpoint_id": "nobody/nothing"}).status_code == 404
        assert raw(fal).get(PATH).status_code == 400
