"""Benchmark: the time one call costs, falwrap ``client.run`` against raw ``fal_client.SyncClient.subscribe``.

Run from the repository root::

    python -m benchmarks.bench_overhead                    # 300 calls per contender, on both servers
    python -m benchmarks.bench_overhead -n 1000 --servers minifal

Claim: falwrap's validation, budget reservation, limiter, retry policy, deadline
and ledger record cost next to nothing: a call takes at most 1.05x the time and
1.05x the client CPU of fal_client's own ``subscribe`` on the same server.

Setup: a server with zero-latency jobs (every job is COMPLETED as soon as it is
accepted), in a child process so that its CPU does not compete with the client
for the GIL; both clients in this process on one keep-alive connection pool
each. Calls are interleaved -- every round runs each contender once, in a
rotated order -- so that a noisy neighbour slows all of them alike. Reported
per contender: median, p95 and mean wall time per call, the client's CPU per
call (``time.thread_time`` of the calling thread), and HTTP requests per call
(from the server's counters, in a separate short phase).

Servers (each run measures on both unless ``--servers`` says otherwise):
FakeFal, the project's emulator, and MiniFal, a minimal independent fal queue
server (``benchmarks/_minifal.py``). What each does differently from fal is
printed with its table. Wall time includes the server's time (FakeFal's Python
server spends about 1 ms of CPU on a job's three requests, MiniFal a third of
that), the same for both clients; the CPU column is the client's alone.

Contenders: falwrap with the status stream (the default) and with polling
(``status_stream=False``); raw fal_client ``subscribe`` with its default
0.1 s polling interval, and with ``interval=0.01``. With zero-latency jobs the
first status already says COMPLETED, so the interval never comes into play
here (both raw rows do submit, status, result); ``bench_latency`` and
``bench_long_jobs`` measure jobs that take time, where it does.

Exit status 0 when falwrap (default configuration) meets the goals on every server.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks._peers import (
    ARGUMENTS,
    COMMON_NOTE,
    MODEL,
    SERVER_NOTES,
    RemoteServer,
    Summary,
    falwrap_client,
    machine,
    median,
    percentile,
    raw_client,
    remote_server,
    report,
    warm_up,
)

GOAL_RATIO = 1.05
COUNT_CALLS = 20


@dataclass
class Contender:
    name: str
    call: Callable[[], Any]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    requests_per_call: float = float("nan")


def measure(contenders: list[Contender], rounds: int) -> None:
    """Run every contender once per round, rotating who goes first."""
    for i in range(rounds):
        k = i % len(contenders)
        for contender in contenders[k:] + contenders[:k]:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            contender.call()
            t1 = time.perf_counter()
            c1 = time.thread_time()
            contender.wall.append(t1 - t0)
            contender.cpu.append(c1 - c0)


def count_requests(fal: RemoteServer, contenders: list[Contender]) -> None:
    """HTTP requests per call, every route included, each contender alone."""
    for contender in contenders:
        fal.reset_counters()
        for _ in range(COUNT_CALLS):
            contender.call()
        contender.requests_per_call = sum(fal.counters.values()) / COUNT_CALLS


def run(calls: int, server: str) -> tuple[list[str], list[tuple[str, bool]], list[Summary]]:
    """Measure on one server; return the table lines, the goal checks and the suite summary."""
    with remote_server(server) as fal:
        stream = falwrap_client(fal.url, fal.key)
        polling = falwrap_client(fal.url, fal.key, status_stream=False)
        raw = raw_client(fal.url, fal.key)
        try:
            contenders = [
                Contender("falwrap run (stream, default)", lambda: stream.run(MODEL, ARGUMENTS)),
                Contender("falwrap run (polling)", lambda: polling.run(MODEL, ARGUMENTS)),
                Contender("fal_client subscribe (interval 0.1)", lambda: raw.subscribe(MODEL, ARGUMENTS)),
                Contender(
                    "fal_client subscribe (interval 0.01)", lambda: raw.subscribe(MODEL, ARGUMENTS, interval=0.01)
                ),
            ]
            warm_up([c.call for c in contenders])
            count_requests(fal, contenders)
            measure(contenders, calls)
        finally:
            stream.close()
            polling.close()
            raw.close()

    ours, peer = contenders[0], contenders[2]
    base = median(peer.wall)
    base_cpu = median(peer.cpu)
    header = (
        f"{'contender':<38} {'median ms':>9} {'p95 ms':>8} {'mean ms':>8} {'x raw':>6} "
        f"{'cpu ms':>7} {'x raw':>6} {'req/call':>8}"
    )
    lines = [f"server: {SERVER_NOTES[server]}", "", header, "-" * len(header)]
    for c in contenders:
        med = median(c.wall)
        cpu = median(c.cpu)
        lines.append(
            f"{c.name:<38} {med * 1e3:>9.3f} {percentile(c.wall, 95) * 1e3:>8.3f} "
            f"{sum(c.wall) / len(c.wall) * 1e3:>8.3f} {med / base:>6.3f} "
            f"{cpu * 1e3:>7.3f} {cpu / base_cpu:>6.3f} {c.requests_per_call:>8.1f}"
        )
    ratio = median(ours.wall) / base
    cpu_ratio = median(ours.cpu) / base_cpu
    checks = [
        (f"{server}: falwrap run <= {GOAL_RATIO}x raw subscribe per call (median {ratio:.3f}x)", ratio <= GOAL_RATIO),
        (
            f"{server}: falwrap run <= {GOAL_RATIO}x raw subscribe client CPU per call (median {cpu_ratio:.3f}x)",
            cpu_ratio <= GOAL_RATIO,
        ),
    ]
    summary = [
        Summary(
            f"per-call time, zero-latency job (median), {server}",
            f"{median(ours.wall) * 1e3:.2f} ms",
            f"{base * 1e3:.2f} ms",
            f"{ratio:.3f}x",
            f"<= {GOAL_RATIO}x",
            ratio <= GOAL_RATIO,
        ),
        Summary(
            f"client CPU per call, zero-latency job, {server}",
            f"{median(ours.cpu) * 1e3:.2f} ms",
            f"{base_cpu * 1e3:.2f} ms",
            f"{cpu_ratio:.3f}x",
            f"<= {GOAL_RATIO}x",
            cpu_ratio <= GOAL_RATIO,
        ),
    ]
    return lines, checks, summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; 0 when falwrap meets its goals."""
    return bench(argv)[0]


def bench(argv: list[str] | None = None) -> tuple[int, list[Summary]]:
    """Run the benchmark and print the tables; the exit status and the suite's summary lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--calls", type=int, default=300, help="calls per contender (default 300)")
    parser.add_argument("--quick", action="store_true", help="100 calls per contender")
    parser.add_argument(
        "--servers", nargs="+", choices=sorted(SERVER_NOTES), default=["fakefal", "minifal"], help="default: both"
    )
    args = parser.parse_args(argv)
    calls = 100 if args.quick else args.calls
    print(machine())
    print(
        f"{calls} calls per contender, interleaved; zero-latency jobs, server in a child process; "
        f"{MODEL} {ARGUMENTS}; requests counted over {COUNT_CALLS} calls each; {COMMON_NOTE}"
    )
    lines: list[str] = []
    checks: list[tuple[str, bool]] = []
    summary: list[Summary] = []
    for server in args.servers:
        server_lines, server_checks, server_summary = run(calls, server)
        lines += ["", *server_lines]
        checks += server_checks
        summary += server_summary
    return report(lines, checks, summary)


if __name__ == "__main__":
    sys.exit(main())
