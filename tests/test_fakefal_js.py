"""FakeFal speaks fal's protocol to the official JavaScript client, @fal-ai/client 1.x, unpatched.

The client's requestMiddleware rewrites fal's hosts to the emulator (paths
unchanged) and names the host it meant in ``X-Forwarded-Host``.  Needs Node.js and npm: skipped
with a reason on a laptop without them, a failure under ``CI=true``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from falwrap.testing import FakeFal
from tests.helpers.node import run_node

pytestmark = pytest.mark.node


def check_flux_result(summary: dict[str, Any], fal: FakeFal) -> None:
    assert summary["requestId"] in fal.jobs
    images = summary["data"]["images"]
    assert [(i["width"], i["height"], i["content_type"]) for i in images] == [(512, 512, "image/png")] * 2
    png = httpx.get(images[1]["url"]).content
    assert Image.open(io.BytesIO(png)).size == (512, 512)
    assert summary["logCount"] == 5
    assert summary["statuses"][-1] == "COMPLETED"


def test_js_subscribe_polling(js_dir: Path) -> None:
    """fal.subscribe in polling mode submits, polls status with logs=1 and fetches the result from FakeFal."""
    # A 1 s job: polls 20 ms apart see it unfinished at least once even when node starts slowly under load.
    with FakeFal(concurrency=1, latency=1.0) as fal:
        summary = run_node(js_dir, "run_job.mjs", fal, "polling")
        check_flux_result(summary, fal)
        assert fal.counters["submit"] == 1 and fal.counters["status"] >= 2 and fal.counters["result"] == 1
        assert fal.counters["stream"] == 0


def test_js_subscribe_streaming(js_dir: Path) -> None:
    """fal.subscribe in streaming mode follows the SSE status stream to COMPLETED, logs accumulated once each."""
    with FakeFal(concurrency=1, latency=0.2) as fal:
        summary = run_node(js_dir, "run_job.mjs", fal, "streaming")
        check_flux_result(summary, fal)
        assert fal.counters["stream"] == 1 and fal.counters["status"] == 0
        assert any(path.endswith("/status/stream") for path in summary["seen"])
