"""FakeFal tells fal's hosts apart by X-Forwarded-Host: fal.run answers with the output, /stream sends
server-sent events, each host serves only its own routes, and without the header the path decides."""

from __future__ import annotations

import json
import socket
from decimal import Decimal
from typing import Any

import httpx
import pytest

from falwrap.testing import FakeFal, JobFailure
from tests.helpers import shapes
from tests.helpers.fal_http import DEV, KLING, eventually, raw, submit, wait_completed


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of a server-sent event stream."""
    events, name = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            name = "message"
    return events


def test_sync_host_returns_the_output_directly() -> None:
    """POST fal.run/{endpoint} runs the model and answers its output, request id and billable units; no queue URLs."""
    with FakeFal(latency=0.1) as fal:
        answer = raw(fal, host="fal.run").post(f"/{DEV}", json={"prompt": "a fox", "seed": 3})
        assert answer.status_code == 200
        output = answer.json()
        shapes.check(output, shapes.FLUX_OUTPUT, "fal.run output")
        assert (output["prompt"], output["seed"]) == ("a fox", 3)
        rid = answer.headers["x-fal-request-id"]
        assert answer.headers["x-fal-billable-units"] == "1"
        assert [record.request_id for record in fal.billing] == [rid]
        view = fal.jobs[rid]
        assert (view.via, view.outcome, view.attempts) == ("run", "ok", 1)
        assert fal.counters["run"] == 1 and fal.counters["submit"] == 0
        queue = raw(fal, host="queue.fal.run")
        assert queue.get(f"/fal-ai/flux/requests/{rid}/status").status_code == 404  # not a queue request


def test_sync_host_answers_failures_directly_and_never_retries() -> None:
    """A failing fal.run call answers the model's error at once, never retried; only the 422 (GPU ran) is billed."""
    with FakeFal(latency=0.05) as fal:
        sync = raw(fal, host="fal.run")
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
        refused = sync.post(f"/{DEV}", json={"prompt": "x"})
        assert refused.status_code == 422
        shapes.check(refused.json(), shapes.MODEL_ERROR)
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503))
        lost = sync.post(f"/{DEV}", json={"prompt": "x"})
        assert lost.status_code == 503 and lost.headers["x-fal-error-type"] == "runner_disconnected"
        shapes.check(lost.json(), shapes.REQUEST_ERROR)
        assert fal.server_retries == 0
        assert [(record.outcome, record.units) for record in fal.billing] == [("failed", 1)]


def test_sync_host_is_429_when_every_runner_is_busy() -> None:
    """Sync calls never queue: with every runner busy fal.run answers 429 and creates no job."""
    with FakeFal(concurrency=1, latency=1.0) as fal:
        submit(raw(fal))
        busy = raw(fal, host="fal.run").post(f"/{DEV}", json={"prompt": "x"})
        assert busy.status_code == 429
        assert len(fal.jobs) == 1


@pytest.mark.parametrize("host", ["fal.run", "queue.fal.run"])
def test_stream_sends_partial_results_then_the_output(host: str) -> None:
    """POST {endpoint}/stream answers text/event-stream: previews as data: URIs, then the full output, then closes."""
    with FakeFal(latency=0.4) as fal:
        client = raw(fal, host=host)
        with client.stream("POST", f"/{DEV}/stream", json={"prompt": "x", "image_size": "square_hd"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            rid = response.headers["x-fal-request-id"]
            events = sse_events(response)
        assert [name for name, _ in events] == ["message"] * 4
        *partials, final = [data for _, data in events]
        assert all(p["images"][0]["url"].startswith("data:image/jpeg;base64,") for p in partials)
        shapes.check(final, shapes.FLUX_OUTPUT, "stream output")
        assert (final["images"][0]["width"], final["images"][0]["height"]) == (1024, 1024)
        assert fal.jobs[rid].via == ("run" if host == "fal.run" else "queue")
        assert [record.request_id for record in fal.billing] == [rid]


def test_stream_of_a_failing_job_is_its_error() -> None:
    """A streaming request whose job fails answers the error as a plain response, not an event stream."""
    with FakeFal(latency=0.05) as fal:
        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
        response = raw(fal, host="fal.run").post(f"/{DEV}/stream", json={"prompt": "x"})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/json"


def test_queue_stream_waits_out_server_retries() -> None:
    """On the queue host a stream follows the job through fal's retries and streams the attempt that works."""
    with FakeFal(latency=0.1) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503, attempts=2))
        with raw(fal, host="queue.fal.run").stream("POST", f"/{DEV}/stream", json={"prompt": "x"}) as response:
            assert response.status_code == 200
            events = sse_events(response)
        assert "images" in events[-1][1] and len(events[-1][1]["images"][0]["url"]) < 200
        assert fal.server_retries == 2


def test_models_that_do_not_stream_answer_404() -> None:
    """A video model has no /stream endpoint on either host."""
    with FakeFal() as fal:
        for host in ("fal.run", "queue.fal.run"):
            response = raw(fal, host=host).post(f"/{KLING}/stream", json={"prompt": "x", "image_url": "u"})
            assert response.status_code == 404
        assert fal.jobs == {}


def test_each_host_serves_only_its_own_routes() -> None:
    """A queue path on the CDN host, a file on the queue host or storage on the API host are 404."""
    with FakeFal(latency=0.05) as fal:
        handle = submit(raw(fal, host="queue.fal.run"))
        wait_completed(raw(fal), handle)
        file_path = httpx.URL(raw(fal).get(handle["response_url"]).json()["images"][0]["url"]).path
        assert raw(fal, host="v3.fal.media").get(file_path).status_code == 200
        assert raw(fal, host="queue.fal.run").get(file_path).status_code == 404
        assert raw(fal, host="v3.fal.media").post(f"/{DEV}", json={"prompt": "x"}).status_code == 404
        assert raw(fal, host="rest.fal.ai").get("/v1/models/pricing", params={"endpoint_id": DEV}).status_code == 404
        assert raw(fal, host="api.fal.ai").get("/v1/models/pricing", params={"endpoint_id": DEV}).status_code == 200
        assert raw(fal, host="api.fal.ai").post("/storage/upload/initiate", json={}).status_code == 404
        assert len(fal.jobs) == 1


def test_without_forwarded_host_the_path_decides() -> None:
    """Without X-Forwarded-Host a POST to a model path is a queue submission and /stream a queue stream."""
    with FakeFal(latency=0.05) as fal:
        client = raw(fal)
        shapes.check(submit(client), shapes.SUBMIT, "submit")
        with client.stream("POST", f"/{DEV}/stream", json={"prompt": "x"}) as response:
            assert response.headers["content-type"] == "text/event-stream"
            response.read()
        assert fal.counters["submit"] == 2 and fal.counters["run"] == 0


def test_submit_answer_carries_gateway_request_id() -> None:
    """The submit answer has fal's documented fields including gateway_request_id (the first attempt's id)."""
    with FakeFal() as fal:
        answer = submit(raw(fal, host="queue.fal.run"))
        shapes.check(answer, shapes.SUBMIT, "submit")
        assert answer["gateway_request_id"] == answer["request_id"]


def test_sync_call_is_billed_even_when_the_caller_hangs_up() -> None:
    """A fal.run call whose caller gives up still runs to the end and is billed: a paid, lost result."""
    with FakeFal(latency=0.5) as fal:
        with pytest.raises(httpx.ReadTimeout):
            raw(fal, host="fal.run", timeout=0.1).post(f"/{DEV}", json={"prompt": "x"})
        eventually(lambda: bool(fal.billing))
        (record,) = fal.billing
        assert record.cost == Decimal("0.025")


@pytest.mark.parametrize(
    "framing, sent",
    [
        ("Content-Length: 64\r\n", b'{"prompt": "a c'),
        ("Transfer-Encoding: chunked\r\n", b'f\r\n{"prompt": "a c\r\n'),
        ("Transfer-Encoding: chunked\r\n", b"40\r\n"),
    ],
    ids=["content-length", "chunked-mid-stream", "chunked-before-data"],
)
def test_a_submission_cut_short_by_the_client_is_not_a_job(framing: str, sent: bytes) -> None:
    """A client killed while sending its submit leaves a partial body: no job, no bill, the connection just closes
    (a real HTTP server never hands a truncated request to fal's queue; accepting ``{}`` would bill a job nobody
    asked for, which a resumed batch then pays for a second time)."""
    with FakeFal() as fal:
        head = f"POST /{DEV} HTTP/1.1\r\nHost: queue.fal.run\r\nAuthorization: Key {fal.key}\r\n"
        head += f"Content-Type: application/json\r\n{framing}\r\n"
        host, port = fal.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode() + sent)
            sock.shutdown(socket.SHUT_WR)  # the client is gone
            assert sock.recv(1024) == b""  # closed without an answer, once the handler gave up on the body
        assert fal.submissions == 0
        assert fal.jobs == {}
        assert fal.billed_total == Decimal(0)
        # The server still takes whole requests.
        assert submit(raw(fal), DEV, {"prompt": "a cat"})["request_id"] in fal.jobs
