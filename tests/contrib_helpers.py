"""Helpers shared by the web integration tests: hermetic environment, example paths, servers."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
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


def fire(url: str, n: int, body: Mapping[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    """POST ``body`` to ``url`` from ``n`` simultaneous threads of a separate process (see contrib_loadgen)."""
    script = Path(__file__).with_name("contrib_loadgen.py")
    done = subprocess.run(
        [sys.executable, str(script), url, str(n), json.dumps(body)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(script.parent)])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [(status, data, headers) for status, data, headers in json.loads(done.stdout)]


def gaps(times: list[float]) -> list[float]:
    """Differences between consecutive sorted times."""
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]


#: gunicorn config: say when each worker has loaded the app, and log each request with the worker's pid.
#: Workers share one pipe: the marker goes out in one write(2) with its newline (atomic below PIPE_BUF),
#: so two workers' markers cannot interleave; the reader still finds markers anywhere in the text.
_GUNICORN_CONF = """
import os

accesslog = "-"
access_log_format = "falwrap-access %(p)s %(s)s %(m)s %(U)s"

def post_worker_init(worker):
    try:  # Django resolves its URLconf (importing the views and falwrap) on the first request: do it now.
        from django.urls import get_resolver
        get_resolver().url_patterns
    except Exception:
        pass
    os.write(1, f"falwrap-worker-ready {worker.pid}\\n".encode())
"""


@attrs.define
class Server:
    """A server process: its URL and what it printed so far (a thread keeps reading)."""

    url: str
    _lines: list[str] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, line: str) -> None:
        """Store one output line."""
        with self._lock:
            self._lines.append(line.rstrip("\n"))

    def lines(self, marker: str = "") -> list[str]:
        """Output lines starting with ``marker``."""
        with self._lock:
            return [line for line in self._lines if line.startswith(marker)]

    def marked(self, marker: str) -> list[str]:
        """The numbers printed after ``marker`` anywhere in the output, once each, in order.

        Processes writing to one pipe can put two markers on one line
        (``falwrap-worker-ready 6938falwrap-worker-ready 6939``): the text is
        searched, not its lines.
        """
        with self._lock:
            text = "\n".join(self._lines)
        return list(dict.fromkeys(re.findall(rf"{re.escape(marker)} (\d+)", text)))

    def served_by(self, status: int, path: str) -> Counter[str]:
        """Worker pid -> requests to ``path`` it answered with ``status`` (from the access log, pid as ``<pid>``)."""
        with self._lock:
            text = "\n".join(self._lines)
        served: Counter[str] = Counter()
        # gunicorn's %(p)s is "<pid>"; a path ends at whitespace or where another line's marker starts.
        access = r"falwrap-access <?(\d+)>? (\d{3}) (\S+) (\S+?)(?=falwrap-|\s|$)"
        for pid, code, _method, url in re.findall(access, text):
            if code == str(status) and url == path:
                served[pid] += 1
        return served


@contextlib.contextmanager
def _serve(command: list[str], env: Mapping[str, str], ready: str, expected: int) -> Iterator[tuple[Server, list[str]]]:
    """Run a server process until ``ready`` has been printed with ``expected`` different numbers; stop it after."""
    base_env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    pythonpath = os.pathsep.join([str(ROOT), str(Path(__file__).parent)])
    proc = subprocess.Popen(
        command,
        env={**base_env, "PYTHONPATH": pythonpath, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server("")
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [server.add(line) for line in proc.stdout or ()], daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(marked := server.marked(ready)) < expected:
            if proc.poll() is not None or time.monotonic() > deadline:
                reader.join(timeout=2)
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "not ready within 60 s"
                output = "\n".join(server.lines()[-60:])
                pytest.fail(f"{command[2:4]} {state}; {len(server.marked(ready))}/{expected} ready:\n{output}")
            time.sleep(0.05)
        yield server, marked
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()


@contextlib.contextmanager
def gunicorn(
    app: str, chdir: Path, env: Mapping[str, str], *, workers: int, threads: int, port: int | None = None
) -> Iterator[Server]:
    """Run gunicorn on ``port`` (default: a free one) of 127.0.0.1 until every worker has loaded the app; stop it after.

    Waiting for the workers matters: requests fired while workers are still
    importing Django would measure start-up contention, not the rate limiter.
    A test that must name the server's URL in its environment (a webhook URL)
    picks the port first with :func:`free_port`.
    """
    port = free_port() if port is None else port
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "gunicorn_conf.py"
        conf.write_text(_GUNICORN_CONF)
        command = [
            sys.executable, "-m", "gunicorn", app, "--config", str(conf),
            "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--threads", str(threads),
            "--chdir", str(chdir), "--timeout", "60", "--graceful-timeout", "2", "--log-level", "warning",
        ]  # fmt: skip
        with _serve(command, env, "falwrap-worker-ready", workers) as (server, _):
            server.url = f"http://127.0.0.1:{port}"
            yield server


@contextlib.contextmanager
def werkzeug(env: Mapping[str, str]) -> Iterator[Server]:
    """Run the Flask example under werkzeug's threaded server in its own process; stop it after."""
    command = [sys.executable, str(Path(__file__).with_name("contrib_flask_server.py"))]
    with _serve(command, env, "falwrap-werkzeug-ready", 1) as (server, ports):
        server.url = f"http://127.0.0.1:{ports[0]}"
        yield server
