"""FakeFal speaks fal's protocol to the official JavaScript client, @fal-ai/client 1.x, unpatched.

The client's requestMiddleware rewrites fal's hosts to the emulator (paths
unchanged) and names the host it meant in ``X-Forwarded-Host``.  Needs Node.js and npm: skipped
with a reason on a laptop without them, a failure under ``CI=true``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from falwrap.testing import FakeFal

JS_DIR = Path(__file__).parent / "js"

pytestmark = pytest.mark.node


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def js_client_dir() -> Path:
    """tests/js with @fal-ai/client installed (npm install on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        reason = "Node.js and npm are needed for the @fal-ai/client fidelity tests"
        if _in_ci():
            pytest.fail(f"{reason}, and CI=true requires them")
        pytest.skip(reason)
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, capture_output=True, timeout=300
        )
    return JS_DIR


def run_js_job(directory: Path, fal: FakeFal, mode: str) -> dict[str, Any]:
    env = {**os.environ, "FAKEFAL_URL": fal.url, "FAKEFAL_KEY": fal.key}
    done = subprocess.run(
        ["node", "run_job.mjs", mode], check=False, cwd=directory, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def check_flux_result(summary: dict[str, Any], fal: FakeFal) -> None:
    assert summary["requestId"] in fal.jobs
    images = summary["data"]["images"]
    assert [(i["width"], i["height"], i["content_type"]) for i in images] == [(512, 512, "image/png")] * 2
    png = httpx.get(images[1]["url"]).content
    assert Image.open(io.BytesIO(png)).size == (512, 512)
    assert summary["logCount"] == 5
    assert summary["statuses"][-1] == "COMPLETED"


def test_js_subscribe_polling(js_client_dir: Path) -> None:
    """fal.subscribe in polling mode submits, polls status with logs=1 and fetches the result from FakeFal."""
    with FakeFal(concurrency=1, latency=0.2) as fal:
        summary = run_js_job(js_client_dir, fal, "polling")
        check_flux_result(summary, fal)
        assert fal.counters["submit"] == 1 and fal.counters["status"] >= 2 and fal.counters["result"] == 1
        assert fal.counters["stream"] == 0


def test_js_subscribe_streaming(js_client_dir: Path) -> None:
    """fal.subscribe in streaming mode follows the SSE status stream to COMPLETED, logs accumulated once each."""
    with FakeFal(concurrency=1, latency=0.2) as fal:
        summary = run_js_job(js_client_dir, fal, "streaming")
        check_flux_result(summary, fal)
        assert fal.counters["stream"] == 1 and fal.counters["status"] == 0
        assert any(path.endswith("/status/stream") for path in summary["seen"])
