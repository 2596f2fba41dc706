"""FakeFal forgets like fal: results after an hour (six minutes when large and unstored), generated
files after the lifetime a request asks for, on a time scale that lets a test skip the wait."""

from __future__ import annotations

import json

import httpx
import pytest

from falwrap.testing import Behaviour, FakeFal, Retention
from tests.helpers.fal_http import DEV, eventually, raw, submit, wait_completed

LARGE = {"prompt": "x", "image_size": "square_hd", "num_images": 4, "sync_mode": True}


def test_result_expires_after_an_hour_and_answers_404() -> None:
    """An hour (scaled to half a second) after completion status, result and cancel answer 404; the job stays listed."""
    with FakeFal(latency=0.05, behaviour=Behaviour(time_scale=7200)) as fal:
        client = raw(fal)
        handle = submit(client)
        wait_completed(client, handle)
        assert client.get(handle["response_url"]).status_code == 200
        eventually(lambda: client.get(handle["response_url"]).status_code == 404)
        result = client.get(handle["response_url"])
        assert result.json() == {"detail": "Request not found"}
        assert client.get(handle["status_url"]).status_code == 404
        cancel = client.put(handle["cancel_url"])
        assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
        view = fal.jobs[handle["request_id"]]
        assert view.result_expired and view.outcome == "ok"


def test_large_unstored_result_is_kept_six_minutes_others_an_hour() -> None:
    """A result of 10 KB or more sent with X-Fal-Store-IO: 0 goes after 6 minutes; small or stored ones stay an hour."""
    with FakeFal(latency=0.05, behaviour=Behaviour(time_scale=360)) as fal:  # 6 min = 1 s, 1 h = 10 s
        client = raw(fal)
        large = submit(client, DEV, LARGE, headers={"X-Fal-Store-IO": "0"})
        small = submit(client, DEV, {"prompt": "x"}, headers={"X-Fal-Store-IO": "0"})
        stored = submit(client, DEV, LARGE)
        for handle in (large, small, stored):
            wait_completed(client, handle)
        assert len(client.get(large["response_url"]).content) >= 10 * 1024
        eventually(lambda: client.get(large["response_url"]).status_code == 404)
        assert client.get(small["response_url"]).status_code == 200
        assert client.get(stored["response_url"]).status_code == 200


def test_retention_none_keeps_results() -> None:
    """Behaviour(retention=None) keeps every result however much fal time passes."""
    with FakeFal(latency=0.05, behaviour=Behaviour(retention=None, time_scale=10**6)) as fal:
        client = raw(fal)
        handle = submit(client)
        wait_completed(client, handle)
        assert client.get(handle["response_url"]).status_code == 200
        assert not fal.jobs[handle["request_id"]].result_expired


def test_custom_retention_values() -> None:
    """Retention's durations are configurable and validated."""
    with FakeFal(latency=0.05, behaviour=Behaviour(retention=Retention(result_s=0.2))) as fal:
        client = raw(fal)
        handle = submit(client)
        wait_completed(client, handle)
        eventually(lambda: client.get(handle["response_url"]).status_code == 404)
    for bad in ({"result_s": -1}, {"large_result_s": float("nan")}, {"large_bytes": 0}):
        with pytest.raises(ValueError):
            Retention(**bad)
    with pytest.raises(ValueError, match="time_scale"):
        Behaviour(time_scale=0)


def test_object_lifecycle_deletes_generated_files() -> None:
    """X-Fal-Object-Lifecycle-Preference makes output files answer 404 after N (scaled) seconds; the result stays."""
    with FakeFal(latency=0.05, behaviour=Behaviour(time_scale=60)) as fal:
        client = raw(fal)
        preference = json.dumps({"expiration_duration_seconds": 60})
        short = submit(client, headers={"X-Fal-Object-Lifecycle-Preference": preference})
        kept = submit(client)
        wait_completed(client, short)
        wait_completed(client, kept)
        short_url = client.get(short["response_url"]).json()["images"][0]["url"]
        kept_url = client.get(kept["response_url"]).json()["images"][0]["url"]
        assert httpx.get(short_url).status_code == 200
        eventually(lambda: httpx.get(short_url).status_code == 404)
        assert httpx.get(kept_url).status_code == 200
        assert client.get(short["response_url"]).status_code == 200


@pytest.mark.parametrize(
    "value", ["not json", "[]", '{"expiration_duration_seconds": -1}', '{"expiration_duration_seconds": "1h"}']
)
def test_object_lifecycle_must_be_valid(value: str) -> None:
    """A malformed lifecycle preference is refused with 400 and creates no job."""
    with FakeFal() as fal:
        response = raw(fal).post(f"/{DEV}", json={"prompt": "x"}, headers={"X-Fal-Object-Lifecycle-Preference": value})
        assert response.status_code == 400
        assert "lifecycle" in response.json()["detail"].lower() or "expiration" in response.json()["detail"]
        assert fal.submissions == 0
