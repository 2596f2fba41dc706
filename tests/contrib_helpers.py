"""Helpers shared by the web integration tests: hermetic environment, example paths, servers."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from falwrap.contrib._common import KNOWN_NAMES

ROOT = Path(__file__).resolve().parents[1]
DJANGO_EXAMPLE = ROOT / "examples" / "django_app"
FLASK_EXAMPLE = ROOT / "examples" / "flask_app"

#: Variables that would leak a developer's setup into the tests.
AMBIENT = sorted({*KNOWN_NAMES, "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"})


def add_example_paths() -> None:
    """Make ``demo_django`` and ``demo_flask`` importable."""
    for path in (DJANGO_EXAMPLE, FLASK_EXAMPLE):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def clear_ambient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every FAL_*/FALWRAP_*/worker variable from the environment for one test."""
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(
    method: str, url: str, body: Mapping[str, Any] | None = None, timeout: float = 30
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One HTTP exchange with a local server: status, JSON body, headers (errors included)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def gaps(times: list[float]) -> list[float]:
    """Differences between consecutive sorted times."""
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]


@contextlib.contextmanager
def gunicorn(app: str, chdir: Path, env: Mapping[str, str], *, workers: int, threads: int) -> Iterator[str]:
    """Run gunicorn on a free 127.0.0.1 port; yield its base URL; stop it (and its workers) after."""
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    command = [
        sys.executable, "-m", "gunicorn", app,
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads),
        "--chdir", str(chdir), "--timeout", "60", "--graceful-timeout", "2", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        env={**base_env, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"gunicorn exited with {proc.returncode}:\n{output}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                pytest.fail("gunicorn did not start listening within 20 s")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
