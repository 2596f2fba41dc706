"""Shared pieces of the client benchmarks: the raw fal_client peer, FakeFal in a child process, statistics.

The peer is the official ``fal_client.SyncClient``, unpatched except that its
httpx client sends requests for fal's hosts to the emulator (the idea of
``tests/test_fakefal.py``): fal_client's module globals are never touched, so
both contenders run the code their users run.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import fal_client
import httpx

from benchmarks._child import ChildServer
from falwrap import FalClient, FalConfig, RateLimitConfig, Timeouts
from falwrap.testing import RouteToFakeFal

#: Hosts fal_client talks to; the peer's transport sends them to the emulator.

#: The endpoint every client benchmark runs: the cheapest image model, output built by FakeFal.
MODEL = "fal-ai/flux/schnell"
ARGUMENTS: dict[str, Any] = {"prompt": "a cat"}


@dataclass(frozen=True)
class RawFalClient(fal_client.SyncClient):
    """The official SyncClient whose httpx client talks to FakeFal (one pool, as fal_client builds it)."""

    target: str = ""
    max_connections: int = 100

    @cached_property
    def _client(self) -> httpx.Client:
        return httpx.Client(
            transport=RouteToFakeFal(self.target, self.max_connections),
            headers={"Authorization": f"Key {self.key}"},
            timeout=120.0,  # fal_client's own default_timeout
            follow_redirects=True,
        )

    def close(self) -> None:
        """Close the pool (fal_client offers no way to, it never closes it)."""
        if "_client" in self.__dict__:
            self._client.close()


def raw_client(url: str, key: str, max_connections: int = 100) -> RawFalClient:
    """The official client pointed at the emulator at ``url``."""
    return RawFalClient(key=key, target=url, max_connections=max_connections)


def falwrap_client(
    url: str, key: str, *, status_stream: bool = True, max_concurrent: int | None = None, store_url: str = "memory:"
) -> FalClient:
    """A FalClient on the emulator, as a user would configure it, with a rate limit that never binds.

    The default limit (60 a minute) would measure the limiter; raw fal_client
    has none, so falwrap's is set far above anything the benchmark can ask for.
    Everything else (retry policy, deadlines, ledger, validation) stays on.
    """
    config = FalConfig(
        api_key=key,
        base_url=url,
        rate_limit=RateLimitConfig(requests_per_minute=1e9, burst=100_000, max_concurrent=max_concurrent),
        timeouts=Timeouts(image=120),
        status_stream=status_stream,
        store_url=store_url,
    )
    return FalClient(config)


# -- FakeFal in a child process ----------------------------------------------------------------------


def _serve(conn: multiprocessing.connection.Connection, kwargs: dict[str, Any], spread: float) -> None:
    """Child process: run FakeFal and answer the parent's commands until told to stop."""
    from falwrap.testing import FakeFal

    with FakeFal(**kwargs) as fal:
        stop = threading.Event()
        if spread:
            # FakeFal gives every job of a model one run time; changing it every few
            # milliseconds gives jobs submitted apart their own, as real jobs have.
            base = float(kwargs.get("latency") or 0.0)
            rng = random.Random(7)

            def vary() -> None:
                while not stop.wait(0.003):
                    fal.set_latency(base + rng.uniform(0.0, spread))

            threading.Thread(target=vary, name="fakefal-spread", daemon=True).start()
        conn.send((fal.url, fal.key))
        while True:
            command, args = conn.recv()
            if command == "stop":
                stop.set()
                conn.send(None)
                return
            if command == "counters":
                conn.send(fal.counters)
            elif command == "submissions":
                conn.send(fal.submissions)
            elif command == "reset":
                fal.reset_counters()
                conn.send(None)
            elif command == "set_latency":
                fal.set_latency(*args)
                conn.send(None)
            elif command == "cpu":
                conn.send(time.process_time())
            elif command == "completed":
                views = fal.jobs.values()
                conn.send({str(v.arguments.get("prompt")): v.completed_at for v in views if v.completed_at})
            else:  # pragma: no cover - a programming error in the parent
                conn.send(ValueError(command))


class RemoteFakeFal(ChildServer):
    """FakeFal in its own process, so its CPU is not charged to the client under test.

    A context manager; ``url`` and ``key`` as on FakeFal, observations over a pipe.

    Args:
        spread: Each job runs up to this much longer than ``latency`` (uniformly at random), seconds.
        **kwargs: passed to ``FakeFal`` (``latency``, ``concurrency``, ...).
    """

    def __init__(self, *, spread: float = 0.0, **kwargs: Any) -> None:
        super().__init__()
        self._kwargs = kwargs
        self._spread = spread

    def __enter__(self) -> RemoteFakeFal:
        self.url, self.key = self._start(_serve, (self._kwargs, self._spread), "fakefal")
        return self

    @property
    def submissions(self) -> int:
        """Jobs accepted."""
        count: int = self._ask("submissions")
        return count


class RemoteServer(Protocol):
    """A fal server in a child process, as the client benchmarks use it (RemoteFakeFal, RemoteMiniFal)."""

    url: str
    key: str

    def __enter__(self) -> RemoteServer: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def counters(self) -> dict[str, int]:
        """Requests received per route."""
        ...

    def reset_counters(self) -> None:
        """Zero the counters."""

    def cpu_seconds(self) -> float:
        """CPU time the server's process has used so far."""
        ...

    def completed(self) -> dict[str, float]:
        """When each job completed, by its ``prompt``."""
        ...


#: What each benchmark server does differently from fal (printed in every client benchmark's notes).
SERVER_NOTES = {
    "fakefal": (
        "FakeFal, the project's emulator (falwrap.testing), in a child process: a ThreadingHTTPServer, "
        "one Python thread per connection under one GIL (about 0.35 ms of its CPU per request); hands out "
        "URLs on its own origin, so only the submission is rerouted (fal's answers name queue.fal.run); "
        "writes what is ready at once in one write"
    ),
    "minifal": (
        "MiniFal (benchmarks/_minifal.py), an independent asyncio server in a child process: every route "
        "about equally cheap, no key check, no queue, no logs; names queue.fal.run in its answers as fal "
        "does, so both clients reroute every request to it; writes what is ready at once in one write"
    ),
}
#: What both do differently from fal: loopback on this machine's cores, no TLS, no proxies, few headers.
COMMON_NOTE = "both: plain HTTP on loopback, sharing this machine's 2 cores with the client; no TLS, no proxy"


def remote_server(name: str, *, latency: float = 0.0, spread: float = 0.0, concurrency: int = 64) -> RemoteServer:
    """A benchmark server by name (``fakefal`` or ``minifal``), not yet started (use it as a context manager)."""
    if name == "fakefal":
        return RemoteFakeFal(latency=latency, spread=spread, concurrency=concurrency)
    if name == "minifal":
        from benchmarks._minifal import RemoteMiniFal

        # MiniFal has no account-wide concurrency: every job starts at once.
        return RemoteMiniFal(latency=latency, spread=spread)
    msg = f"unknown server {name!r}; known: {', '.join(SERVER_NOTES)}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Summary:
    """One line of the suite's combined table (``python -m benchmarks``).

    Attributes:
        claim: what is measured.
        falwrap: falwrap's figure, formatted.
        peer: the peer's figure, formatted ("-" when there is none).
        ratio: falwrap / peer, formatted.
        goal: the goal, formatted.
        ok: whether falwrap met it.
    """

    claim: str
    falwrap: str
    peer: str
    ratio: str
    goal: str
    ok: bool


# -- statistics and report ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    """One line naming the machine and the software measured."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"fal-client {fal_client.__version__}, httpx {httpx.__version__}"
    )


def warm_up(calls: Sequence[Callable[[], Any]], rounds: int = 10) -> None:
    """Run each contender a few times (connections open, caches filled) before measuring."""
    for _ in range(rounds):
        for call in calls:
            call()


def report(
    lines: Sequence[str], checks: Sequence[tuple[str, bool]], summary: list[Summary]
) -> tuple[int, list[Summary]]:
    """Print a benchmark's table and its goal checks; its exit status (0 when every goal holds) and summary."""
    print("\n".join(lines))
    print()
    print_checks(checks)
    return (0 if all(ok for _, ok in checks) else 1), summary


def print_checks(checks: Sequence[tuple[str, bool]]) -> None:
    """``PASS``/``FAIL`` lines, as the other benchmarks print them."""
    for text, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")


def flush() -> None:
    """Flush stdout (the suite runner interleaves progress on stderr)."""
    sys.stdout.flush()


__all__ = [
    "ARGUMENTS",
    "COMMON_NOTE",
    "MODEL",
    "SERVER_NOTES",
    "RawFalClient",
    "RemoteFakeFal",
    "RemoteServer",
    "Summary",
    "falwrap_client",
    "flush",
    "machine",
    "median",
    "percentile",
    "print_checks",
    "raw_client",
    "remote_server",
    "warm_up",
]
