"""The unpatched fal_client completes every call against FakeFal through RouteToFakeFal, and every
answer FakeFal sends it has the shape fal documents.

fal_client is used exactly as an application uses it (``SyncClient(key=...)``,
``AsyncClient``); ``RouteToFakeFal.installed`` reroutes fal's hosts in httpx
itself, so even the clients fal_client builds on its own (CDN uploads) reach
the emulator.  A recorder under it keeps each JSON answer for the shape checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import attrs
import fal_client
import httpx
import pytest

from falwrap.testing import FakeFal, JobFailure, RouteToFakeFal
from tests.helpers import shapes
from tests.helpers.fal_http import DEV, KLING, SCHNELL


@attrs.frozen
class Exchange:
    """One request fal_client sent and the JSON it got back."""

    method: str
    host: str
    path: str
    status: int
    body: Any


@attrs.define
class Conformance:
    """A FakeFal, fal's hosts routed to it, and the exchanges seen."""

    fal: FakeFal
    exchanges: list[Exchange] = attrs.field(factory=list)

    def client(self) -> fal_client.SyncClient:
        return fal_client.SyncClient(key=self.fal.key)

    def answers(self, method: str, host: str, suffix: str = "") -> list[Any]:
        return [e.body for e in self.exchanges if (e.method, e.host) == (method, host) and e.path.endswith(suffix)]


@pytest.fixture
def env() -> Iterator[Conformance]:
    with FakeFal(latency=0.15) as fal, RouteToFakeFal.installed(fal.url):
        state = Conformance(fal)
        send = httpx.HTTPTransport.handle_request

        def recording(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            host = request.headers.get("x-forwarded-host", request.url.host)
            response = send(transport, request)
            if response.headers.get("content-type", "").startswith("application/json"):
                response.read()
                body = response.json()
                state.exchanges.append(Exchange(request.method, host, request.url.path, response.status_code, body))
            return response

        # Set and restored inside the routing block, so that httpx is whole again after it.
        httpx.HTTPTransport.handle_request = recording  # type: ignore[method-assign]
        try:
            yield state
        finally:
            httpx.HTTPTransport.handle_request = send  # type: ignore[method-assign]


def test_run_answers_the_output(env: Conformance) -> None:
    """fal_client.run() gets the flux output straight from fal.run."""
    output = env.client().run(DEV, {"prompt": "a fox", "image_size": "square"})
    shapes.check(output, shapes.FLUX_OUTPUT, "run")
    assert (output["images"][0]["width"], output["prompt"]) == (512, "a fox")
    assert env.fal.counters["run"] == 1 and env.fal.counters["submit"] == 0


def test_subscribe_with_logs_walks_the_documented_states(env: Conformance) -> None:
    """subscribe() with logs sees Queued/InProgress/Completed built from answers of the documented shapes."""
    updates: list[Any] = []
    result = env.client().subscribe(
        SCHNELL, {"prompt": "x"}, with_logs=True, on_queue_update=updates.append, interval=0.02
    )
    shapes.check(result, shapes.FLUX_OUTPUT, "subscribe")
    assert isinstance(updates[-1], fal_client.Completed) and updates[-1].error is None
    assert any(isinstance(u, fal_client.InProgress) and u.logs for u in updates)
    shapes.check(env.answers("POST", "queue.fal.run")[0], shapes.SUBMIT, "submit")
    by_state = {"IN_QUEUE": shapes.IN_QUEUE, "IN_PROGRESS": shapes.IN_PROGRESS, "COMPLETED": shapes.COMPLETED}
    for status in env.answers("GET", "queue.fal.run", "/status"):
        shapes.check(status, by_state[status["status"]], "status")


def test_stream_yields_partials_then_the_output(env: Conformance) -> None:
    """fal_client.stream() reads fal.run's server-sent events to the final output."""
    events = list(env.client().stream(DEV, {"prompt": "x"}))
    assert len(events) == 4
    shapes.check(events[-1], shapes.FLUX_OUTPUT, "stream")
    assert all(event["images"][0]["url"].startswith("data:") for event in events[:-1])


def test_submit_status_result_and_cancel(env: Conformance) -> None:
    """submit/status/result/cancel and the request handle work, and cancel's answers have fal's shape."""
    client = env.client()
    env.fal.set_latency(0.2)
    handle = client.submit(KLING, {"prompt": "x", "image_url": "https://example.invalid/a.png"})
    assert isinstance(client.status(KLING, handle.request_id, with_logs=True), fal_client.InProgress)
    events = list(handle.iter_events(with_logs=True, interval=0.02))
    assert isinstance(events[-1], fal_client.Completed) and events[-1].metrics["inference_time"] > 0
    shapes.check(client.result(KLING, handle.request_id), shapes.KLING_OUTPUT, "result")
    shapes.check(handle.get(), shapes.KLING_OUTPUT, "handle.get")
    env.fal.set_latency(5)
    doomed = client.submit(DEV, {"prompt": "x"})
    client.cancel(DEV, doomed.request_id)
    status = client.status(DEV, doomed.request_id)
    assert isinstance(status, fal_client.Completed) and status.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        client.result(DEV, doomed.request_id)
    assert info.value.status_code == 499
    for answer in env.answers("PUT", "queue.fal.run", "/cancel"):
        shapes.check(answer, shapes.CANCEL, "cancel")


def test_failed_job_reaches_fal_client_with_fals_error_shape(env: Conformance) -> None:
    """A model error surfaces as FalClientHTTPError 422 whose body is fal's detail list."""
    env.fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        env.client().subscribe(DEV, {"prompt": "x"}, interval=0.02)
    assert info.value.status_code == 422
    shapes.check({"detail": info.value.message}, shapes.MODEL_ERROR, "error")


def test_upload_v3(env: Conformance) -> None:
    """upload() gets a CDN token from rest.fal.ai and uploads to the CDN host; both answers have fal's shape."""
    url = env.client().upload(b"bytes", "application/octet-stream", file_name="a.bin")
    assert httpx.get(url).content == b"bytes"
    (token,) = env.answers("POST", "rest.fal.ai", "/storage/auth/token")
    shapes.check(token, shapes.UPLOAD_TOKEN, "token")
    uploads = [e for e in env.exchanges if e.path == "/files/upload"]
    assert len(uploads) == 1
    shapes.check(uploads[0].body, shapes.UPLOAD_V3, "upload")


def test_async_client_run_and_subscribe(env: Conformance) -> None:
    """fal_client.AsyncClient's run and subscribe complete against FakeFal too."""

    async def calls() -> tuple[dict[str, Any], dict[str, Any]]:
        client = fal_client.AsyncClient(key=env.fal.key)
        return await client.run(DEV, {"prompt": "a"}), await client.subscribe(DEV, {"prompt": "b"}, interval=0.02)

    ran, subscribed = asyncio.run(calls())
    shapes.check(ran, shapes.FLUX_OUTPUT, "async run")
    assert subscribed["prompt"] == "b"


def test_httpx_is_restored_after_the_routing_block() -> None:
    """Leaving RouteToFakeFal.installed() puts httpx's transports back exactly as they were."""
    sync_send, async_send = httpx.HTTPTransport.handle_request, httpx.AsyncHTTPTransport.handle_async_request
    with FakeFal() as fal:
        with RouteToFakeFal.installed(fal.url):
            assert httpx.HTTPTransport.handle_request is not sync_send
            with pytest.raises(RuntimeError, match="nest"), RouteToFakeFal.installed(fal.url):
                pass
        assert httpx.HTTPTransport.handle_request is sync_send
        assert httpx.AsyncHTTPTransport.handle_async_request is async_send
