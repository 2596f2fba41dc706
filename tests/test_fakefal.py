"""FakeFal speaks fal's protocol: proven with the official fal_client and raw HTTP."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

import attrs
import av
import fal_client
import httpx
import pytest
from PIL import Image

from falwrap.testing import Behaviour, FakeFal, FakeModel, Fault, JobFailure, RouteToFakeFal, billable_units, queue_api
from falwrap.testing.media import jpeg_bytes, png_bytes, sample_mp4
from falwrap.testing.video import mp4_duration, mp4_of_length

DEV = "fal-ai/flux/dev"
SCHNELL = "fal-ai/flux/schnell"
KLING = "fal-ai/kling-video/v1/standard/image-to-video"


@dataclass(frozen=True)
class RedirectedSyncClient(fal_client.SyncClient):
    """The official SyncClient, unpatched except that its httpx client talks to FakeFal."""

    target: str = ""

    @cached_property
    def _client(self) -> httpx.Client:
        return httpx.Client(
            transport=RouteToFakeFal(self.target),
            headers={"Authorization": f"Key {self.key}"},
            timeout=60.0,  # a loaded 2-core machine must not make fal_client time out and resubmit
            follow_redirects=True,
        )


def official(fal: FakeFal) -> RedirectedSyncClient:
    return RedirectedSyncClient(key=fal.key, target=fal.url)


def raw(fal: FakeFal, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=fal.url, headers={"Authorization": f"Key {key or fal.key}"}, timeout=5.0)


def submit(
    client: httpx.Client, model: str = DEV, arguments: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    response = client.post(f"/{model}", json=arguments if arguments is not None else {"prompt": "a cat"}, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def wait_completed(client: httpx.Client, handle: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(handle["status_url"], params={"logs": 1}).json()
        if status["status"] == "COMPLETED":
            return status
        time.sleep(0.01)
    raise AssertionError("job did not complete")


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=0.05) as emulator:
        yield emulator


# -- the official Python client --------------------------------------------------------------------


def test_official_subscribe_returns_flux_output_with_real_image(fal: FakeFal) -> None:
    """fal_client.subscribe completes a flux job whose image URL serves a PNG of the requested size."""
    result = official(fal).subscribe(
        DEV, {"prompt": "a cat", "image_size": {"width": 640, "height": 480}, "output_format": "png"}, interval=0.01
    )
    assert result["prompt"] == "a cat"
    assert result["has_nsfw_concepts"] == [False]
    image = result["images"][0]
    assert (image["width"], image["height"], image["content_type"]) == (640, 480, "image/png")
    download = httpx.get(image["url"])  # no Authorization: files are public
    assert download.headers["content-type"] == "image/png"
    assert int(download.headers["content-length"]) == len(download.content)
    assert Image.open(io.BytesIO(download.content)).size == (640, 480)


def test_official_submit_status_result_walks_the_states(fal: FakeFal) -> None:
    """submit + status(with_logs) + result go through Queued/InProgress to Completed with logs and metrics."""
    client = official(fal)
    fal.set_latency(0.2)
    handle = client.submit(SCHNELL, {"prompt": "x", "seed": 42})
    first = client.status(SCHNELL, handle.request_id, with_logs=True)
    assert isinstance(first, fal_client.InProgress)
    assert first.logs and first.logs[0]["source"] == "USER"
    time.sleep(0.25)
    done = client.status(SCHNELL, handle.request_id, with_logs=True)
    assert isinstance(done, fal_client.Completed)
    assert done.error is None
    assert done.metrics["inference_time"] == pytest.approx(0.2, abs=0.01)
    assert {line["level"] for line in done.logs or []} == {"INFO"}
    assert client.result(SCHNELL, handle.request_id)["seed"] == 42


def test_official_cancel_of_queued_job_makes_result_499(fal: FakeFal) -> None:
    """fal_client.cancel removes a queued job; its status reads client_cancelled and its result answers 499."""
    client = official(fal)
    fal.set_latency(5)
    blockers = [client.submit(DEV, {"prompt": str(i)}) for i in range(4)]
    handle = client.submit(DEV, {"prompt": "queued"})
    assert isinstance(client.status(DEV, handle.request_id), fal_client.Queued)
    client.cancel(DEV, handle.request_id)
    status = client.status(DEV, handle.request_id)
    assert isinstance(status, fal_client.Completed)
    assert status.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        client.result(DEV, handle.request_id)
    assert info.value.status_code == 499
    for blocker in blockers:
        client.cancel(DEV, blocker.request_id)
    assert fal.billing == []


def test_official_upload_via_fal_storage(fal: FakeFal) -> None:
    """upload(repository="fal") initiates, PUTs the bytes, and the file URL serves them back."""
    url = official(fal).upload(b"hello bytes", "text/plain", file_name="note.txt", repository="fal")
    assert url.startswith(fal.url + "/files/") and url.endswith("note.txt")
    download = httpx.get(url)
    assert download.content == b"hello bytes"
    assert download.headers["content-type"] == "text/plain"
    assert fal.counters["upload"] == 2


def test_official_client_retries_nginx_errors_without_duplicating(fal: FakeFal) -> None:
    """Two nginx 502s on submit are retried by fal_client; only the third attempt creates a job."""
    fal.inject("submit", Fault.nginx(502), times=2)
    result = official(fal).subscribe(DEV, {"prompt": "x"}, interval=0.01)
    assert result["images"]
    assert fal.counters["submit"] == 3
    assert fal.submissions == 1


def test_official_client_pays_twice_when_accepted_response_is_lost(fal: FakeFal) -> None:
    """Fault.after(reset) accepts the submit then drops the answer: fal_client resubmits and fal bills two jobs."""
    fal.inject("submit", Fault.after(Fault.reset()))
    official(fal).subscribe(DEV, {"prompt": "x"}, interval=0.01)
    assert fal.counters["submit"] == 2
    assert fal.submissions == 2
    deadline = time.monotonic() + 2
    while len(fal.billing) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fal.billing) == 2


def test_official_subscribe_raises_on_failed_job(fal: FakeFal) -> None:
    """A job failed by fail_next_jobs surfaces in fal_client as FalClientHTTPError 422 with the error detail."""
    fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        official(fal).subscribe(DEV, {"prompt": "x"}, interval=0.01)
    assert info.value.status_code == 422
    assert info.value.message[0]["type"] == "content_policy_violation"
    assert info.value.response_headers["x-fal-retryable"] == "false"
    # The model ran before failing: billed for its GPU time, as fal may.
    assert [(record.outcome, record.units) for record in fal.billing] == [("failed", 1)]


# -- auth and routing -------------------------------------------------------------------------------


def test_every_api_route_requires_the_key(fal: FakeFal) -> None:
    """Submit, status, result, cancel, upload and pricing answer 401 without the right key; files need none."""
    handle = submit(raw(fal))
    wait_completed(raw(fal), handle)
    file_url = raw(fal).get(handle["response_url"]).json()["images"][0]["url"]
    bad = raw(fal, key="wrong:key")
    for response in (
        bad.post(f"/{DEV}", json={"prompt": "x"}),
        bad.get(handle["status_url"]),
        bad.get(handle["status_url"] + "/stream"),
        bad.get(handle["response_url"]),
        bad.put(handle["cancel_url"]),
        bad.post("/storage/upload/initiate", json={"file_name": "a", "content_type": "text/plain"}),
        httpx.post(f"{fal.url}/{DEV}", json={"prompt": "x"}),
    ):
        assert response.status_code == 401
        assert response.json() == {"detail": "No user found for Key ID and Secret"}
    pricing = bad.get("/v1/models/pricing", params={"endpoint_id": DEV})
    assert pricing.status_code == 401
    assert pricing.json()["error"]["type"] == "authorization_error"
    assert httpx.get(file_url).status_code == 200
    assert fal.key not in repr(fal)


def test_submit_answer_has_fal_shape_and_app_only_urls(fal: FakeFal) -> None:
    """Submit answers IN_QUEUE with request_id, queue_position and status/result/cancel URLs without the sub-path."""
    handle = submit(raw(fal), KLING, {"prompt": "x", "image_url": "http://example.invalid/a.png"})
    rid = handle["request_id"]
    assert handle["status"] == "IN_QUEUE" and handle["queue_position"] == 0
    assert handle["response_url"] == f"{fal.url}/fal-ai/kling-video/requests/{rid}"
    assert handle["status_url"] == handle["response_url"] + "/status"
    assert handle["cancel_url"] == handle["response_url"] + "/cancel"


def test_unknown_model_and_unknown_request_are_404(fal: FakeFal) -> None:
    """An unknown model on submit and an unknown request id on every queue route answer 404 like fal."""
    client = raw(fal)
    assert client.post("/nobody/nothing", json={}).status_code == 404
    assert fal.submissions == 0
    base = "/fal-ai/flux/requests/00000000-0000-0000-0000-000000000000"
    assert client.get(base + "/status").status_code == 404
    assert client.get(base).status_code == 404
    cancel = client.put(base + "/cancel")
    assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})


def test_result_before_completion_is_400_in_progress(fal: FakeFal) -> None:
    """Fetching the result of a running job answers 400 'Request is still in progress'."""
    fal.set_latency(1)
    handle = submit(raw(fal))
    response = raw(fal).get(handle["response_url"])
    assert (response.status_code, response.json()) == (400, {"detail": "Request is still in progress"})


def test_status_codes_and_logs_flag(fal: FakeFal) -> None:
    """Status is 202 while running and 200 when completed; logs are null unless asked for (1 or true)."""
    fal.set_latency(0.2)
    client = raw(fal)
    handle = submit(client)
    running = client.get(handle["status_url"], params={"logs": "0"})
    assert running.status_code == 202 and running.json()["logs"] is None
    assert client.get(handle["status_url"], params={"logs": "true"}).json()["logs"]
    wait_completed(client, handle)
    done = client.get(handle["status_url"], params={"logs": "false"})
    assert done.status_code == 200 and done.json()["logs"] is None


# -- queue, concurrency, timeouts -------------------------------------------------------------------


def test_queue_positions_with_concurrency_one() -> None:
    """With concurrency=1 later jobs wait IN_QUEUE with 0-based positions that move up as jobs finish."""
    with FakeFal(concurrency=1, latency=0.15) as fal:
        client = raw(fal)
        handles = [submit(client) for _ in range(3)]
        assert [h["queue_position"] for h in handles] == [0, 0, 1]
        statuses = [client.get(h["status_url"]).json() for h in handles]
        assert [s["status"] for s in statuses] == ["IN_PROGRESS", "IN_QUEUE", "IN_QUEUE"]
        assert [s.get("queue_position") for s in statuses[1:]] == [0, 1]
        time.sleep(0.17)
        statuses = [client.get(h["status_url"]).json() for h in handles]
        assert [s["status"] for s in statuses] == ["COMPLETED", "IN_PROGRESS", "IN_QUEUE"]
        assert statuses[2]["queue_position"] == 0
        assert fal.max_in_flight == 3


def test_start_timeout_expires_queued_job_with_user_504() -> None:
    """X-Fal-Request-Timeout on a job still queued at expiry completes it with 504 and Timeout-Type user."""
    with FakeFal(concurrency=1, latency=5.0) as fal:
        client = raw(fal)
        submit(client)
        handle = submit(client, headers={"X-Fal-Request-Timeout": "1"})
        status = wait_completed(client, handle, timeout=4.0)
        assert status["error_type"] == "request_timeout"
        result = client.get(handle["response_url"])
        assert result.status_code == 504
        assert result.headers["x-fal-request-timeout-type"] == "user"
        assert result.json()["error_type"] == "request_timeout"


def test_max_queue_length_refuses_without_creating_a_job() -> None:
    """fal_max_queue_length answers 429 once that many jobs of the model wait, and creates no job."""
    with FakeFal(concurrency=1, latency=1.0) as fal:
        client = raw(fal)
        submit(client)
        submit(client, params={"fal_max_queue_length": 1})
        refused = client.post(f"/{DEV}", json={"prompt": "x"}, params={"fal_max_queue_length": 1})
        assert refused.status_code == 429
        assert fal.submissions == 2 and fal.in_flight == 2


def test_cancel_states() -> None:
    """Cancel answers 202 for queued and running jobs, 400 ALREADY_COMPLETED after; an honoured cancel never bills."""
    with FakeFal(concurrency=1, latency=0.3, behaviour=Behaviour(cancel="honoured")) as fal:
        client = raw(fal)
        running, queued, third = submit(client), submit(client), submit(client)
        assert client.put(queued["cancel_url"]).json() == {"status": "CANCELLATION_REQUESTED"}
        cancel = client.put(running["cancel_url"])
        assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        assert client.get(third["status_url"]).json()["status"] == "IN_PROGRESS"
        again = client.put(running["cancel_url"])
        assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
        status = client.get(running["status_url"]).json()
        assert (status["status"], status["error_type"]) == ("COMPLETED", "client_cancelled")
        assert client.get(queued["response_url"]).json() == {"detail": "Request cancelled by the client."}
        wait_completed(client, third)
        assert [record.request_id for record in fal.billing] == [third["request_id"]]
        assert {v.outcome for v in fal.jobs.values()} == {"cancelled", "ok"}


# -- status stream ----------------------------------------------------------------------------------


def read_events(fal: FakeFal, handle: dict[str, Any], logs: int = 1) -> tuple[list[dict[str, Any]], list[str], float]:
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    start = time.monotonic()
    with raw(fal).stream("GET", handle["status_url"] + "/stream", params={"logs": logs}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line.startswith(":"):
                comments.append(line)
    return events, comments, time.monotonic() - start


def test_status_stream_sends_each_change_and_ends_with_completed() -> None:
    """The SSE stream reports queue moves, IN_PROGRESS and new log lines once each, then COMPLETED, then closes."""
    with FakeFal(concurrency=1, latency=0.1) as fal:
        # The first job holds the only runner long enough for the stream to open while the
        # second waits, however slowly a loaded machine gets there.
        fal.set_latency(1.5, SCHNELL)
        client = raw(fal)
        submit(client, SCHNELL)
        handle = submit(client)
        events, _, _ = read_events(fal, handle)
    states = [event["status"] for event in events]
    assert states[0] == "IN_QUEUE" and events[0]["queue_position"] == 0
    assert "IN_PROGRESS" in states
    assert states[-1] == "COMPLETED" and states.count("COMPLETED") == 1
    messages = [line["message"] for event in events for line in event.get("logs") or []]
    assert len(messages) == len(set(messages)) == 5  # incremental: no line sent twice
    assert messages[-1] == "Done"


def test_status_stream_sends_keepalive_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    """While nothing changes the stream sends ':' keep-alive comments (every KEEPALIVE_S, 5 s in production)."""
    monkeypatch.setattr(queue_api, "KEEPALIVE_S", 0.05)
    with FakeFal(latency=0.4) as fal:
        events, comments, _ = read_events(fal, submit(raw(fal)), logs=0)
    assert len(comments) >= 3
    assert [e["status"] for e in events] == ["IN_PROGRESS", "COMPLETED"]


# -- faults -----------------------------------------------------------------------------------------


def test_http_fault_is_consumed_once_in_fifo_order(fal: FakeFal) -> None:
    """Injected faults apply to the next requests in order, then the route behaves normally again."""
    fal.inject("submit", Fault.http(503, json={"detail": "first"}))
    fal.inject("submit", Fault.http(418, body="second", headers={"X-Test": "yes"}))
    client = raw(fal)
    first = client.post(f"/{DEV}", json={})
    second = client.post(f"/{DEV}", json={})
    assert (first.status_code, first.json()) == (503, {"detail": "first"})
    assert (second.status_code, second.text, second.headers["x-test"]) == (418, "second", "yes")
    submit(client)
    assert fal.counters["submit"] == 3 and fal.submissions == 1


def test_fault_limited_to_a_model(fal: FakeFal) -> None:
    """A fault injected for one model leaves other models' requests alone."""
    fal.inject("submit", Fault.http(500), model=SCHNELL)
    client = raw(fal)
    submit(client, DEV)
    assert client.post(f"/{SCHNELL}", json={}).status_code == 500


def test_request_error_fault_has_fal_headers(fal: FakeFal) -> None:
    """Fault.request_error sends the flat body, X-Fal-Error-Type and x-fal-request-id."""
    fal.inject("status", Fault.request_error(503, "runner_scheduling_failure"))
    handle = submit(raw(fal))
    response = raw(fal).get(handle["status_url"])
    assert response.status_code == 503
    assert response.json()["error_type"] == "runner_scheduling_failure"
    assert response.headers["x-fal-error-type"] == "runner_scheduling_failure"
    assert "x-fal-request-id" in response.headers


def test_nginx_rate_limit_validation_and_malformed_faults(fal: FakeFal) -> None:
    """nginx, rate_limited, validation and malformed_json faults look like what fal's edge and models send."""
    fal.inject("result", Fault.nginx(504))
    fal.inject("result", Fault.rate_limited(retry_after=2))
    fal.inject("result", Fault.validation(["body", "image_size"], "too big", "image_too_large", ctx={"max_width": 1}))
    fal.inject("result", Fault.malformed_json())
    handle = submit(raw(fal))
    client = raw(fal)
    nginx = client.get(handle["response_url"])
    assert nginx.status_code == 504 and "nginx" in nginx.text and "x-fal-request-id" not in nginx.headers
    limited = client.get(handle["response_url"])
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    invalid = client.get(handle["response_url"])
    assert invalid.status_code == 422 and invalid.headers["x-fal-retryable"] == "false"
    assert invalid.json()["detail"][0]["ctx"] == {"max_width": 1}
    malformed = client.get(handle["response_url"])
    with pytest.raises(json.JSONDecodeError):
        malformed.json()


def test_reset_fault_creates_no_job(fal: FakeFal) -> None:
    """Fault.reset drops the connection without an answer, and the refused submit creates no job."""
    fal.inject("submit", Fault.reset())
    with pytest.raises(httpx.TransportError):
        raw(fal).post(f"/{DEV}", json={"prompt": "x"})
    assert fal.counters["submit"] == 1 and fal.submissions == 0 and fal.jobs == {}


def test_after_fault_creates_the_job_then_loses_the_answer(fal: FakeFal) -> None:
    """Fault.after(http 502) accepts the job (counted, in fal.jobs) yet the client only sees the 502."""
    fal.inject("submit", Fault.after(Fault.nginx(502)))
    response = raw(fal).post(f"/{DEV}", json={"prompt": "x"})
    assert response.status_code == 502
    assert fal.submissions == 1
    (view,) = fal.jobs.values()
    assert view.arguments["prompt"] == "x"


def test_stall_fault_then_close_or_respond(fal: FakeFal) -> None:
    """Fault.stall stays silent (the client times out, no job), and with then='respond' answers after the wait."""
    fal.inject("submit", Fault.stall(0.5))
    with pytest.raises(httpx.ReadTimeout):
        raw(fal).post(f"/{DEV}", json={"prompt": "x"}, timeout=0.1)
    fal.inject("submit", Fault.stall(0.2, then="respond"))
    start = time.monotonic()
    submit(raw(fal))
    assert time.monotonic() - start >= 0.2
    assert fal.submissions == 1


def test_cut_after_drops_the_stream_mid_job_then_streams_normally() -> None:
    """Fault.cut_after(n) sends n status events, then closes mid-body; the job runs on and the next stream is whole."""
    with FakeFal(latency=0.3) as fal:
        fal.inject("stream", Fault.cut_after(1))
        handle = submit(raw(fal))
        events: list[dict[str, Any]] = []
        url = handle["status_url"] + "/stream"
        with pytest.raises(httpx.RemoteProtocolError), raw(fal).stream("GET", url, params={"logs": 1}) as response:
            assert response.status_code == 200
            events.extend(json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: "))
        assert [e["status"] for e in events] == ["IN_PROGRESS"]
        rest, _, _ = read_events(fal, handle)
        assert rest[-1]["status"] == "COMPLETED"
        assert fal.counters["stream"] == 2 and fal.submissions == 1
        (view,) = fal.jobs.values()
        assert view.outcome == "ok"


def test_cut_after_zero_events_and_a_completed_stream() -> None:
    """cut_after(0) drops the stream right after its headers; a stream whose job completes in time ends whole."""
    with FakeFal(latency=0.05) as fal:
        fal.inject("stream", Fault.cut_after(0))
        handle = submit(raw(fal))
        with pytest.raises(httpx.RemoteProtocolError), raw(fal).stream("GET", handle["status_url"] + "/stream") as r:
            r.read()
        time.sleep(0.1)  # the job is COMPLETED now: its stream is one event
        fal.inject("stream", Fault.cut_after(1))
        events, _, _ = read_events(fal, handle)
        assert [e["status"] for e in events] == ["COMPLETED"]


def test_cut_after_is_only_for_the_stream_route(fal: FakeFal) -> None:
    """cut_after is refused on other routes and with a negative count."""
    with pytest.raises(ValueError, match="stream"):
        fal.inject("status", Fault.cut_after(1))
    with pytest.raises(ValueError, match="events"):
        Fault.cut_after(-1)


def test_inject_rejects_unknown_route(fal: FakeFal) -> None:
    """inject validates the route name and the count."""
    with pytest.raises(ValueError, match="unknown route"):
        fal.inject("nope", Fault.reset())
    with pytest.raises(ValueError, match="times"):
        fal.inject("submit", Fault.reset(), times=0)


# -- failures ---------------------------------------------------------------------------------------


def test_model_failure_completes_with_error_and_retryable_header() -> None:
    """A FakeModel with a failure completes its jobs with error/error_type and a 500 carrying X-Fal-Retryable."""
    failing = FakeModel(
        "acme/broken", "image", "image", Decimal("0.01"), 0.01, JobFailure("internal_server_error", 500, True)
    )
    with FakeFal(models={failing.id: failing}) as fal:
        client = raw(fal)
        handle = submit(client, failing.id)
        status = wait_completed(client, handle)
        assert (status["error_type"], status["error"]) == ("internal_server_error", "Internal server error")
        assert status["logs"][-1]["level"] == "ERROR"
        result = client.get(handle["response_url"])
        assert result.status_code == 500 and result.headers["x-fal-retryable"] == "true"
        assert fal.billing == []


def test_fail_next_jobs_only_affects_n_jobs_of_the_model(fal: FakeFal) -> None:
    """fail_next_jobs(n, model=...) fails exactly the next n accepted jobs of that model."""
    fal.fail_next_jobs(2, JobFailure("no_media_generated"), model=DEV)
    client = raw(fal)
    handles = [submit(client, SCHNELL), submit(client, DEV), submit(client, DEV), submit(client, DEV)]
    results = [wait_completed(client, h).get("error_type") for h in handles]
    assert results == [None, "no_media_generated", "no_media_generated", None]


# -- billing and pricing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "arguments", "units"),
    [
        (DEV, {"prompt": "x"}, Decimal(1)),  # landscape_4_3: 1024x768
        (DEV, {"prompt": "x", "image_size": "square_hd", "num_images": 2}, Decimal(2)),
        (DEV, {"prompt": "x", "image_size": {"width": 2000, "height": 1000}}, Decimal(2)),
        ("fal-ai/flux-pro/v1.1-ultra", {"prompt": "x", "num_images": 3}, Decimal(3)),
        (KLING, {"prompt": "x", "image_url": "u", "duration": "10"}, Decimal("10.008")),  # billed on output length
        (KLING, {"prompt": "x", "image_url": "u"}, Decimal("5.008")),
    ],
)
def test_billing_records_units_and_header(fal: FakeFal, model: str, arguments: dict[str, Any], units: Decimal) -> None:
    """Each successful job is billed units x price, and x-fal-billable-units carries the same units."""
    client = raw(fal)
    handle = submit(client, model, arguments)
    wait_completed(client, handle)
    result = client.get(handle["response_url"])
    assert Decimal(result.headers["x-fal-billable-units"]) == units
    (record,) = fal.billing
    price = fal.models[model].unit_price_usd
    assert (record.request_id, record.model_id, record.units, record.cost) == (
        handle["request_id"],
        model,
        units,
        units * price,
    )
    assert fal.billed_total == units * price


def test_billable_units_rules() -> None:
    """billable_units rounds each image up to whole megapixels (2**20 px) and handles every unit."""
    images = {"images": [{"width": 1024, "height": 1024}, {"width": 1025, "height": 1024}, {"width": 8, "height": 8}]}
    assert billable_units("megapixel", images, {}) == Decimal(4)
    assert billable_units("image", images, {}) == Decimal(3)
    assert billable_units("second", {}, {"duration": "10"}) == Decimal(10)
    assert billable_units("video", {}, {}) == Decimal(1)
    assert billable_units("compute_second", {}, {}, inference_s=1.2345) == Decimal("1.234")
    with pytest.raises(ValueError, match="unknown billing unit"):
        billable_units("token", {}, {})


def test_pricing_endpoint_and_set_price(fal: FakeFal) -> None:
    """The platform pricing API lists unit prices in fal's shape and follows set_price at run time."""
    client = raw(fal)
    answer = client.get("/v1/models/pricing", params={"endpoint_id": f"{DEV},{KLING}"}).json()
    assert answer["next_cursor"] is None and answer["has_more"] is False
    assert answer["prices"] == [
        {"endpoint_id": DEV, "unit_price": 0.025, "unit": "image", "currency": "USD"},
        {"endpoint_id": KLING, "unit_price": 0.045, "unit": "video_second", "currency": "USD"},
    ]
    fal.set_price(DEV, Decimal("0.03"))
    repeated = client.get("/v1/models/pricing", params=[("endpoint_id", DEV), ("endpoint_id", SCHNELL)]).json()
    assert [p["unit_price"] for p in repeated["prices"]] == [0.03, 0.003]
    wait_completed(client, submit(client))
    assert fal.billing[0].unit_price == Decimal("0.03")
    assert fal.counters["pricing"] == 2


def test_pricing_errors_use_platform_shape(fal: FakeFal) -> None:
    """Pricing with no id, more than 50 ids or an unknown id answers fal's {error:{type,message,...}} body."""
    client = raw(fal)
    for params, status in (({}, 400), ({"endpoint_id": ",".join([DEV] * 51)}, 400), ({"endpoint_id": "x/y"}, 404)):
        response = client.get("/v1/models/pricing", params=params)
        assert response.status_code == status
        assert set(response.json()["error"]) == {"type", "message", "docs_url", "request_id"}
    with pytest.raises(KeyError):
        fal.set_price("x/y", Decimal(1))


# -- counters and views -----------------------------------------------------------------------------


def test_counters_submit_times_and_reset(fal: FakeFal) -> None:
    """Counters count every request per route (faulted too); reset_counters zeroes them but keeps jobs."""
    client = raw(fal)
    fal.inject("status", Fault.http(500))
    before = time.monotonic()
    handle = submit(client)
    client.get(handle["status_url"])
    wait_completed(client, handle)
    client.get(handle["response_url"])
    counts = fal.counters
    assert counts["submit"] == 1 and counts["status"] >= 2 and counts["result"] == 1 and counts["file"] == 0
    assert before <= fal.submit_times[0] <= time.monotonic()
    fal.reset_counters()
    assert set(fal.counters.values()) == {0}
    assert fal.submit_times == [] and fal.submissions == 0 and fal.max_in_flight == 0
    assert len(fal.jobs) == 1


def test_job_views_are_read_only(fal: FakeFal) -> None:
    """fal.jobs gives frozen snapshots whose arguments cannot be changed."""
    handle = submit(raw(fal), DEV, {"prompt": "x", "seed": 1})
    view = fal.jobs[handle["request_id"]]
    assert (view.model_id, view.arguments["seed"]) == (DEV, 1)
    with pytest.raises(TypeError):
        view.arguments["seed"] = 2  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        view.state = "COMPLETED"  # type: ignore[misc]


# -- media ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 3), (1024, 768), (1536, 2752)])
def test_generated_images_decode_at_exact_size(width: int, height: int) -> None:
    """Hand-built PNG and JPEG files decode with Pillow at exactly the requested size."""
    png = Image.open(io.BytesIO(png_bytes(width, height)))
    jpeg = Image.open(io.BytesIO(jpeg_bytes(width, height)))
    png.load()
    jpeg.load()
    assert (png.format, png.size, jpeg.format, jpeg.size) == ("PNG", (width, height), "JPEG", (width, height))


def test_video_output_serves_valid_mp4(fal: FakeFal) -> None:
    """Kling jobs return a video whose URL serves the sample MP4 with the advertised size and type."""
    client = raw(fal)
    handle = submit(client, KLING, {"prompt": "x", "image_url": "u"})
    wait_completed(client, handle)
    video = client.get(handle["response_url"]).json()["video"]
    download = httpx.get(video["url"])
    assert download.headers["content-type"] == video["content_type"] == "video/mp4"
    assert len(download.content) == video["file_size"] == int(download.headers["content-length"])
    assert download.content[4:8] == b"ftyp"


@pytest.mark.parametrize("seconds", [None, "3.008", "5.008", "0.5"], ids=["sample", "3.008", "5.008", "0.5"])
def test_videos_decode_with_ffmpeg_at_their_length(seconds: str | None) -> None:
    """FFmpeg's own libraries (PyAV) decode the bundled MP4 as a 5 s H.264 video, and the videos FakeFal bills
    by length (``mp4_of_length``) as playing exactly that long: the bill follows what a player sees."""
    data = sample_mp4() if seconds is None else mp4_of_length(Decimal(seconds))
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 90)
        frames = sum(1 for _ in container.decode(stream))  # every frame decodes
        assert frames == stream.frames > 0
        assert container.duration is not None
        length = Decimal(container.duration) / av.time_base
    assert length == Decimal(seconds or 5)
    assert mp4_duration(data) == length


def test_cdn_upload_and_head(fal: FakeFal) -> None:
    """The CDN v3 upload (token, then POST /files/upload) stores a file that GET and HEAD serve."""
    client = raw(fal)
    token = client.post("/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}).json()
    assert token["base_url"] == fal.url
    upload = httpx.post(
        f"{token['base_url']}/files/upload",
        content=b"\x89PNG",
        headers={"Authorization": f"{token['token_type']} {token['token']}", "Content-Type": "image/png"},
    )
    url = upload.json()["access_url"]
    assert httpx.get(url).content == b"\x89PNG"
    head = httpx.head(url)
    assert (head.status_code, head.headers["content-length"], head.content) == (200, "4", b"")
    assert httpx.post(f"{fal.url}/files/upload", content=b"x").status_code == 401


# -- concurrency and lifecycle ----------------------------------------------------------------------


def test_64_threads_of_official_clients_complete_1280_jobs() -> None:
    """64 threads x 20 subscribes through fal_client all succeed, each billed once, none left in flight."""
    threads, per_thread = 64, 20
    with FakeFal(concurrency=16, latency=0.005) as fal:
        client = official(fal)
        results: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(index: int) -> None:
            try:
                for job in range(per_thread):
                    out = client.subscribe(SCHNELL, {"prompt": f"{index}-{job}", "seed": job}, interval=0.005)
                    with lock:
                        results.append(out["prompt"])
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert errors == []
        assert sorted(results) == sorted(f"{i}-{j}" for i in range(threads) for j in range(per_thread))
        assert len(fal.billing) == fal.submissions == threads * per_thread
        assert len({record.request_id for record in fal.billing}) == threads * per_thread
        assert fal.in_flight == 0
        assert fal.max_in_flight <= threads


def test_stop_leaves_no_threads_running() -> None:
    """stop() ends idle keep-alive connections, open status streams and stalls, and joins every server thread."""
    before = set(threading.enumerate())
    fal = FakeFal(latency=30).start()
    client = raw(fal)
    handle = submit(client)
    fal.inject("status", Fault.stall(30))
    streamed: list[BaseException | None] = []

    def stream() -> None:
        try:
            with raw(fal).stream("GET", handle["status_url"] + "/stream") as response:
                for _ in response.iter_bytes():
                    pass
            streamed.append(None)
        except httpx.HTTPError as exc:
            streamed.append(exc)

    def stalled() -> None:
        with contextlib.suppress(httpx.HTTPError):
            raw(fal).get(handle["status_url"], timeout=60)

    helpers = [threading.Thread(target=stream), threading.Thread(target=stalled)]
    for helper in helpers:
        helper.start()
    time.sleep(0.2)
    start = time.monotonic()
    fal.stop()
    assert time.monotonic() - start < 3
    for helper in helpers:
        helper.join(5)
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == []
    assert len(streamed) == 1
    client.close()


def test_plugin_fixture_gives_started_emulator(fake_fal: FakeFal) -> None:
    """The pytest plugin's fake_fal fixture is a started FakeFal serving requests."""
    assert fake_fal.url.startswith("http://127.0.0.1:")
    assert submit(raw(fake_fal))["status"] == "IN_QUEUE"


def test_url_before_start_raises() -> None:
    """Reading url before start() raises a RuntimeError that says how to start it."""
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeFal().url


def test_restart_after_stop_serves_again() -> None:
    """A stopped FakeFal can start again (on a new port) and keeps its jobs and billing."""
    fal = FakeFal(latency=0.01)
    with fal:
        wait_completed(raw(fal), submit(raw(fal)))
    with fal:
        events, _, _ = read_events(fal, submit(raw(fal)))
        assert events[-1]["status"] == "COMPLETED"
        assert len(fal.billing) == 2


def test_plugin_config_fixture_points_at_the_emulator(fake_fal_config: Any, fake_fal: FakeFal) -> None:
    """fake_fal_config is a FalConfig with the emulator's URL whose repr hides the key."""
    assert fake_fal_config.base_url == fake_fal.url
    assert fake_fal.key not in repr(fake_fal_config)
