"""The unpatched @fal-ai/client (queue polling and streaming, run, stream, storage upload) completes
against FakeFal, and every JSON answer it received has the shape fal documents.

The client's requestMiddleware sends fal's hosts to the emulator with the path
unchanged and the original host in ``X-Forwarded-Host`` (tests/js/fakefal.mjs).
Needs Node.js and npm: skipped with a reason without them, a failure under ``CI=true``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from falwrap.testing import FakeFal
from tests.helpers import shapes
from tests.helpers.node import run_node

pytestmark = pytest.mark.node

STATUS_SHAPES = {"IN_QUEUE": shapes.IN_QUEUE, "IN_PROGRESS": shapes.IN_PROGRESS, "COMPLETED": shapes.COMPLETED}


def check_answers(summary: dict[str, Any]) -> set[str]:
    """Check each JSON answer the client received against fal's shape for its route; return the routes seen."""
    seen = set()
    for answer in summary["answers"]:
        body, path = answer["body"], answer["path"]
        if answer["method"] == "POST" and answer["host"] == "queue.fal.run":
            kind, shape = "submit", shapes.SUBMIT
        elif path.endswith("/status"):
            kind, shape = "status", STATUS_SHAPES[body["status"]]
        elif "/requests/" in path or answer["host"] == "fal.run":
            kind, shape = "output", shapes.FLUX_OUTPUT
        elif path.startswith("/storage/upload/initiate"):
            kind, shape = "initiate", shapes.UPLOAD_INITIATE
        else:
            continue
        shapes.check(body, shape, kind)
        seen.add(kind)
    return seen


def check_images(data: dict[str, Any]) -> None:
    shapes.check(data, shapes.FLUX_OUTPUT, "data")
    assert [(i["width"], i["height"], i["content_type"]) for i in data["images"]] == [(512, 512, "image/png")] * 2
    assert Image.open(io.BytesIO(httpx.get(data["images"][1]["url"]).content)).size == (512, 512)


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_js_subscribe(js_dir: Path, mode: str) -> None:
    """fal.subscribe submits to the queue host and follows the status (polled or streamed) to the result."""
    with FakeFal(concurrency=1, latency=0.2) as fal:
        summary = run_node(js_dir, "conformance.mjs", fal, mode)
        check_images(summary["data"])
        expected = {"submit", "output"} | ({"status"} if mode == "polling" else set())
        assert check_answers(summary) == expected
        assert summary["requestId"] in fal.jobs
        assert summary["statuses"][-1] == "COMPLETED"
        for update in summary["updates"]:
            shapes.check(update, STATUS_SHAPES[update["status"]], "update")
        routes = ("stream", "status") if mode == "streaming" else ("status", "stream")
        assert fal.counters[routes[0]] >= 1 and fal.counters[routes[1]] == 0


def test_js_run(js_dir: Path) -> None:
    """fal.run calls the sync host and gets the output and request id directly, with no queue involved."""
    with FakeFal(latency=0.1) as fal:
        summary = run_node(js_dir, "conformance.mjs", fal, "run")
        check_images(summary["data"])
        assert check_answers(summary) == {"output"}
        assert fal.jobs[summary["requestId"]].via == "run"
        assert fal.counters["run"] == 1 and fal.counters["submit"] == 0


def test_js_stream(js_dir: Path) -> None:
    """fal.stream reads fal.run's server-sent events: partial results, then the output it resolves with."""
    with FakeFal(latency=0.3) as fal:
        summary = run_node(js_dir, "conformance.mjs", fal, "stream")
        check_images(summary["data"])
        assert len(summary["events"]) == 4 and summary["events"][-1] == summary["data"]
        assert all(e["images"][0]["url"].startswith("data:image/jpeg") for e in summary["events"][:-1])


def test_js_storage_upload(js_dir: Path) -> None:
    """fal.storage.upload initiates on the REST host and PUTs the bytes; the file URL serves them."""
    with FakeFal() as fal:
        summary = run_node(js_dir, "conformance.mjs", fal, "upload")
        assert check_answers(summary) == {"initiate"}
        assert httpx.get(summary["url"]).content == b"hello from node"
        assert fal.counters["upload"] == 2
