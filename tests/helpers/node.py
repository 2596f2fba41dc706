"""Running the official JavaScript client (@fal-ai/client) against FakeFal: the scripts in tests/js."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from falwrap.testing import FakeFal

#: The Node.js project holding the scripts and, once installed, @fal-ai/client.
JS_DIR = Path(__file__).parent.parent / "js"


def install_js_client() -> Path:
    """``JS_DIR`` with @fal-ai/client installed (``npm install`` on first use)."""
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, capture_output=True, timeout=300
        )
    return JS_DIR


def run_node(directory: Path, script: str, fal: FakeFal, mode: str) -> dict[str, Any]:
    """Run ``node script mode`` against ``fal``; the summary it prints last, as JSON (asserts it exited 0)."""
    env = {**os.environ, "FAKEFAL_URL": fal.url, "FAKEFAL_KEY": fal.key}
    done = subprocess.run(
        ["node", script, mode], check=False, cwd=directory, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary
