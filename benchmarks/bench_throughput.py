"""Benchmark: jobs per second and CPU per job with 64 threads on one client, falwrap against raw fal_client.

Run from the repository root::

    python -m benchmarks.bench_throughput              # 2,000 jobs per contender
    python -m benchmarks.bench_throughput --jobs 5000
    python -m benchmarks.bench_throughput --quick      # 400 jobs per contender

Claim: one shared FalClient carries a web app's 64 request threads at least as
fast as fal_client does, for no more CPU per job.

Setup: FakeFal with ``latency=0`` in a child process, so that its CPU is
measured on its own and not charged to the client under test (both share the
machine's 2 cores all the same). 64 threads share one client of each kind
(fal_client's one httpx pool; falwrap's one pool) and take jobs from a common
counter until the contender's jobs for the round are done. Each contender's
jobs are split into rounds, run in the order A B C C B A ... so that drift of
a noisy machine falls on all alike. Reported: jobs per second (all jobs / all
time), the median round's rate, CPU per job in this process
(``time.process_time``: every client thread) and in the emulator's, and HTTP
requests per job from FakeFal's counters.

Exit status 0 when falwrap (default configuration) reaches the goal: at least
0.95x raw fal_client's jobs per second, and at most 1.10x its client CPU per job.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks._peers import (
    ARGUMENTS,
    MODEL,
    RemoteFakeFal,
    Summary,
    falwrap_client,
    machine,
    median,
    raw_client,
    report,
    warm_up,
)

THREADS = 64
ROUNDS = 2
GOAL_RATE_RATIO = 0.95
GOAL_CPU_RATIO = 1.10


@dataclass
class Contender:
    name: str
    call: Callable[[], Any]
    seconds: float = 0.0
    jobs: int = 0
    failures: int = 0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    requests: int = 0
    round_rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else float("nan")


def one_round(fal: RemoteFakeFal, contender: Contender, jobs: int, threads: int) -> None:
    """Run ``jobs`` jobs on ``threads`` threads sharing the contender's client; add up time, CPU and requests."""
    remaining = [jobs]
    failures = [0]
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                contender.call()
            except Exception:
                with lock:
                    failures[0] += 1

    pool = [threading.Thread(target=worker, name="bench-throughput") for _ in range(threads)]
    for thread in pool:
        thread.start()
    fal.reset_counters()
    server0 = fal.cpu_seconds()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    start.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    contender.server_cpu += fal.cpu_seconds() - server0
    contender.requests += sum(fal.counters.values())
    contender.client_cpu += cpu
    contender.seconds += elapsed
    contender.jobs += jobs
    contender.failures += failures[0]
    contender.round_rates.append(jobs / elapsed)


def run(jobs: int, threads: int = THREADS) -> tuple[list[str], list[tuple[str, bool]], list[Summary]]:
    """Measure; return the table lines, the goal checks and the suite summary."""
    with RemoteFakeFal(latency=0, concurrency=threads) as fal:
        stream = falwrap_client(fal.url, fal.key)
        polling = falwrap_client(fal.url, fal.key, status_stream=False)
        raw = raw_client(fal.url, fal.key)
        try:
            contenders = [
                Contender("falwrap run (stream, default)", lambda: stream.run(MODEL, ARGUMENTS)),
                Contender("falwrap run (polling)", lambda: polling.run(MODEL, ARGUMENTS)),
                Contender("fal_client subscribe", lambda: raw.subscribe(MODEL, ARGUMENTS)),
            ]
            warm_up([c.call for c in contenders], rounds=5)
            per_round = max(1, jobs // ROUNDS)
            for r in range(ROUNDS):
                order = contenders if r % 2 == 0 else contenders[::-1]
                for contender in order:
                    one_round(fal, contender, per_round, threads)
        finally:
            stream.close()
            polling.close()
            raw.close()

    ours, peer = contenders[0], contenders[-1]
    header = (
        f"{'contender':<31} {'jobs':>6} {'fail':>4} {'jobs/s':>7} {'x raw':>6} {'median':>7} | "
        f"{'client cpu ms/job':>17} {'x raw':>6} {'server cpu':>10} | {'req/job':>7}"
    )
    lines = [header, "-" * len(header)]
    for c in contenders:
        lines.append(
            f"{c.name:<31} {c.jobs:>6} {c.failures:>4} {c.rate:>7.0f} {c.rate / peer.rate:>6.3f} "
            f"{median(c.round_rates):>7.0f} | {c.client_cpu / c.jobs * 1e3:>17.3f} "
            f"{(c.client_cpu / c.jobs) / (peer.client_cpu / peer.jobs):>6.3f} "
            f"{c.server_cpu / c.jobs * 1e3:>10.3f} | {c.requests / c.jobs:>7.2f}"
        )
    rate_ratio = ours.rate / peer.rate
    cpu_ratio = (ours.client_cpu / ours.jobs) / (peer.client_cpu / peer.jobs)
    checks = [
        (f"falwrap: no failed jobs ({ours.failures})", ours.failures == 0),
        (f"falwrap: >= {GOAL_RATE_RATIO}x raw jobs/s ({rate_ratio:.3f}x)", rate_ratio >= GOAL_RATE_RATIO),
        (f"falwrap: <= {GOAL_CPU_RATIO}x raw client CPU per job ({cpu_ratio:.3f}x)", cpu_ratio <= GOAL_CPU_RATIO),
    ]
    summary = [
        Summary(
            f"throughput, {threads} threads, one client",
            f"{ours.rate:.0f} jobs/s",
            f"{peer.rate:.0f} jobs/s",
            f"{rate_ratio:.3f}x",
            f">= {GOAL_RATE_RATIO}x",
            rate_ratio >= GOAL_RATE_RATIO and ours.failures == 0,
        ),
        Summary(
            "client CPU per job",
            f"{ours.client_cpu / ours.jobs * 1e3:.2f} ms",
            f"{peer.client_cpu / peer.jobs * 1e3:.2f} ms",
            f"{cpu_ratio:.3f}x",
            f"<= {GOAL_CPU_RATIO}x",
            cpu_ratio <= GOAL_CPU_RATIO,
        ),
    ]
    return lines, checks, summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; 0 when falwrap meets its goals."""
    return bench(argv)[0]


def bench(argv: list[str] | None = None) -> tuple[int, list[Summary]]:
    """Run the benchmark and print the table; the exit status and the suite's summary lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per contender (default 2000)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"threads per contender (default {THREADS})")
    parser.add_argument("--quick", action="store_true", help="400 jobs per contender")
    args = parser.parse_args(argv)
    jobs = 400 if args.quick else args.jobs
    print(machine())
    print(
        f"{args.threads} threads x {jobs} jobs per contender on one shared client, {ROUNDS} rounds each "
        "(A B C C B A); FakeFal(latency=0) in a child process; CPU: client = this process, server = the child"
    )
    print()
    return report(*run(jobs, args.threads))


if __name__ == "__main__":
    sys.exit(main())
