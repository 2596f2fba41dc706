"""Benchmark: 64 threads on one client following 1 s jobs: CPU per job, requests per job, completion-to-return.

Run from the repository root::

    python -m benchmarks.bench_long_jobs                   # 64 threads x 3 jobs per contender, 2 rounds, both servers
    python -m benchmarks.bench_long_jobs --jobs-per-thread 5 --servers fakefal
    python -m benchmarks.bench_long_jobs --quick           # 1 round of 2 jobs per thread

Claim: a web app's 64 threads waiting on jobs that take a second cost falwrap
well under half the CPU they cost fal_client: following the status stream is
3 HTTP requests per job (submit, stream, result) where ``subscribe`` polls every
0.1 s (about 14 requests for a 1 s job), and the call still returns within
10 ms (median) of the job's completion.

Setup: a server in a child process (its CPU is not charged to the client) runs
each job 1 s plus a uniformly random 0 to 0.1 s (one raw polling interval, so
that a poller's grid is not phase-locked to the job length). 64 threads share
one client of each kind; thread *i* starts 1 s x i / 64 after the first, so
that completions are spread evenly (about one every 16 ms) instead of landing
together, then runs its jobs back to back. Each job has a unique prompt, by
which the server's completion time is found: latency is the call's return
(``time.monotonic()`` in the calling thread) minus the server's completion
(the same clock on one machine). Client CPU is ``time.process_time`` of this
process over the round (every thread), divided by the round's jobs; requests
are the server's counters over the round. Contenders alternate, round after
round (A B C, C B A).

Servers: FakeFal, the project's emulator (its run time is varied every 3 ms
by the benchmark, since FakeFal gives a model's jobs one run time), and
MiniFal, an independent minimal fal server (``benchmarks/_minifal.py``); what
each does differently from fal is printed with its table.

Exit status 0 when falwrap (default configuration) meets the goals on every server.
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
)

THREADS = 64
JOB_SECONDS = 1.0
#: Each job runs JOB_SECONDS plus up to this much (fal_client's polling interval).
JOB_SPREAD_S = 0.1
GOAL_CPU_RATIO = 0.5
GOAL_REQUESTS = 3.0
GOAL_P50_MS = 10.0

#: Runs one job with this prompt and returns when its output is in hand.
Call = Callable[[str], Any]


@dataclass
class Contender:
    name: str
    call: Call
    jobs: int = 0
    failures: int = 0
    client_cpu: float = 0.0
    requests: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def cpu_per_job(self) -> float:
        return self.client_cpu / self.jobs if self.jobs else float("nan")

    @property
    def requests_per_job(self) -> float:
        return self.requests / self.jobs if self.jobs else float("nan")


def one_round(fal: RemoteServer, contender: Contender, threads: int, per_thread: int, tag: str) -> None:
    """Each of ``threads`` threads runs ``per_thread`` jobs, starts staggered; add up CPU, requests, latencies."""
    returned: dict[str, float] = {}
    failures = [0]
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        start.wait()
        time.sleep(index * JOB_SECONDS / threads)
        for k in range(per_thread):
            prompt = f"{tag} thread {index} job {k}"
            try:
                contender.call(prompt)
            except Exception:
                with lock:
                    failures[0] += 1
                continue
            done = time.monotonic()
            with lock:
                returned[prompt] = done

    pool = [threading.Thread(target=worker, args=(i,), name="bench-long-jobs") for i in range(threads)]
    for thread in pool:
        thread.start()
    fal.reset_counters()
    cpu0 = time.process_time()
    start.wait()
    for thread in pool:
        thread.join()
    cpu = time.process_time() - cpu0
    contender.requests += sum(fal.counters.values())
    completed = fal.completed()
    for prompt, at in returned.items():
        finished = completed.get(prompt)
        if finished is None:
            msg = f"the server has no completed job for {prompt!r}"
            raise RuntimeError(msg)
        contender.latencies.append(at - finished)
    contender.client_cpu += cpu
    contender.jobs += threads * per_thread
    contender.failures += failures[0]


def run(
    rounds: int, threads: int, per_thread: int, server: str
) -> tuple[list[str], list[tuple[str, bool]], list[Summary]]:
    """Measure on one server; return the table lines, the goal checks and the suite summary."""
    with remote_server(server, latency=JOB_SECONDS, spread=JOB_SPREAD_S, concurrency=threads) as fal:
        stream = falwrap_client(fal.url, fal.key)
        polling = falwrap_client(fal.url, fal.key, status_stream=False)
        raw = raw_client(fal.url, fal.key)
        try:
            contenders = [
                Contender("falwrap run (stream, default)", lambda p: stream.run(MODEL, {"prompt": p})),
                Contender("falwrap run (polling fallback)", lambda p: polling.run(MODEL, {"prompt": p})),
                Contender("fal_client subscribe (interval 0.1)", lambda p: raw.subscribe(MODEL, {"prompt": p})),
            ]
            for r in range(rounds):
                order = contenders if r % 2 == 0 else contenders[::-1]
                for contender in order:
                    one_round(fal, contender, threads, per_thread, f"round {r} {contender.name}")
        finally:
            stream.close()
            polling.close()
            raw.close()

    ours, peer = contenders[0], contenders[-1]
    header = (
        f"{'contender':<37} {'jobs':>5} {'fail':>4} | {'client cpu ms/job':>17} {'x raw':>6} | "
        f"{'req/job':>7} {'x raw':>6} | {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}"
    )
    lines = [f"server: {SERVER_NOTES[server]}", "", header, "-" * len(header)]
    for c in contenders:
        lat = c.latencies
        lines.append(
            f"{c.name:<37} {c.jobs:>5} {c.failures:>4} | {c.cpu_per_job * 1e3:>17.3f} "
            f"{c.cpu_per_job / peer.cpu_per_job:>6.3f} | {c.requests_per_job:>7.2f} "
            f"{c.requests_per_job / peer.requests_per_job:>6.2f} | {median(lat) * 1e3:>7.1f} "
            f"{percentile(lat, 95) * 1e3:>7.1f} {max(lat, default=float('nan')) * 1e3:>7.1f}"
        )
    cpu_ratio = ours.cpu_per_job / peer.cpu_per_job
    p50_ms = median(ours.latencies) * 1e3
    p95_ms = percentile(ours.latencies, 95) * 1e3
    peer_p50 = median(peer.latencies) * 1e3
    checks = [
        (f"{server}: falwrap: no failed jobs ({ours.failures})", ours.failures == 0),
        (
            f"{server}: falwrap: <= {GOAL_CPU_RATIO}x raw client CPU per 1 s job ({cpu_ratio:.3f}x)",
            cpu_ratio <= GOAL_CPU_RATIO,
        ),
        (
            f"{server}: falwrap: <= {GOAL_REQUESTS:g} HTTP requests per job ({ours.requests_per_job:.2f})",
            ours.requests_per_job <= GOAL_REQUESTS,
        ),
        (f"{server}: falwrap: completion->return p50 <= {GOAL_P50_MS:g} ms ({p50_ms:.1f} ms)", p50_ms <= GOAL_P50_MS),
    ]
    summary = [
        Summary(
            f"client CPU per 1 s job, {threads} threads, {server}",
            f"{ours.cpu_per_job * 1e3:.2f} ms",
            f"{peer.cpu_per_job * 1e3:.2f} ms",
            f"{cpu_ratio:.3f}x",
            f"<= {GOAL_CPU_RATIO}x",
            cpu_ratio <= GOAL_CPU_RATIO and ours.failures == 0,
        ),
        Summary(
            f"HTTP requests per 1 s job, {threads} threads, {server}",
            f"{ours.requests_per_job:.2f}",
            f"{peer.requests_per_job:.2f}",
            f"{ours.requests_per_job / peer.requests_per_job:.3f}x",
            f"<= {GOAL_REQUESTS:g}",
            ours.requests_per_job <= GOAL_REQUESTS,
        ),
        Summary(
            f"completion->return p50 (p95), {threads} threads, {server}",
            f"{p50_ms:.1f} ({p95_ms:.1f}) ms",
            f"{peer_p50:.1f} ({percentile(peer.latencies, 95) * 1e3:.1f}) ms",
            f"{p50_ms / peer_p50:.3f}x",
            f"p50 <= {GOAL_P50_MS:g} ms",
            p50_ms <= GOAL_P50_MS,
        ),
    ]
    return lines, checks, summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; 0 when falwrap meets its goals."""
    return bench(argv)[0]


def bench(argv: list[str] | None = None) -> tuple[int, list[Summary]]:
    """Run the benchmark and print the tables; the exit status and the suite's summary lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per contender (default 2)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"threads per contender (default {THREADS})")
    parser.add_argument("--jobs-per-thread", type=int, default=3, help="jobs each thread runs per round (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 jobs per thread")
    parser.add_argument(
        "--servers", nargs="+", choices=sorted(SERVER_NOTES), default=["fakefal", "minifal"], help="default: both"
    )
    args = parser.parse_args(argv)
    rounds, per_thread = (1, 2) if args.quick else (args.rounds, args.jobs_per_thread)
    print(machine())
    print(
        f"{args.threads} threads x {per_thread} jobs per round, {rounds} rounds per contender (A B C, C B A); "
        f"jobs of {JOB_SECONDS:g} s + U(0, {JOB_SPREAD_S:g}) s, server in a child process; thread starts "
        f"spread over {JOB_SECONDS:g} s; latency = call returned - server completed; {COMMON_NOTE}"
    )
    lines: list[str] = []
    checks: list[tuple[str, bool]] = []
    summary: list[Summary] = []
    for server in args.servers:
        server_lines, server_checks, server_summary = run(rounds, args.threads, per_thread, server)
        lines += ["", *server_lines]
        checks += server_checks
        summary += server_summary
    return report(lines, checks, summary)


if __name__ == "__main__":
    sys.exit(main())
