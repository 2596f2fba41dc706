"""Benchmark: a batch at a rate limit through ``FalClient.map`` against a naive thread pool over fal_client.

Run from the repository root::

    python -m benchmarks.bench_map                 # 1,000 jobs at 600 a minute, 0.5 s each: about 4 minutes
    python -m benchmarks.bench_map --jobs 200      # a shorter run

Claim: ``map()`` runs N jobs at the configured rate with nothing idle: it finishes
within 3% of the ideal time, ``(N - 1) / rate + one job's latency`` (the first
submission goes at once, the others one interval apart, and the last job still
has to run), and never sends more than the rate allows.

Peers, in the same run: the thread pool everyone writes first, a
``ThreadPoolExecutor`` over ``fal_client.SyncClient.subscribe``. Without pacing
it overruns the rate (all its workers submit at once: fal answers 429s, or the
account is throttled); paced by sleeping ``workers / rate`` between each
worker's jobs, it stays under the rate but idles while jobs run, so it takes
longer than the ideal. Both figures are printed.

Setup: FakeFal in this process, every job takes the given latency, room for 256
jobs at once (so only the rate limits anything). The rate is measured where fal
would see it: FakeFal stamps every submission's arrival. "Most in 10 s" is the
largest number of arrivals within any ten seconds: the rate allows ``rate/6``,
plus one at the window's edge and one more for arrival jitter (a submission
granted on time can reach the emulator some milliseconds late on a busy
machine, bunching with the next). The one-second figure shows the bursts.

What FakeFal does differently from fal here: it shares this process (and its
GIL) with both contenders, answers on loopback in plain HTTP, and limits no
rate of its own: where fal would answer an unpaced pool with 429s, FakeFal
accepts every submission and only counts it.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from benchmarks._peers import MODEL, Summary, machine, raw_client, report
from falwrap import FalClient, FalConfig, RateLimitConfig, Timeouts
from falwrap.testing import FakeFal

#: The goal: map() finishes within this fraction of the ideal time.
GOAL_SLACK = 0.03


def most_within(times: Sequence[float], window: float) -> int:
    """The largest number of arrivals within any ``window`` seconds."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def run_map(fal: FakeFal, jobs: int, rate: float) -> tuple[float, list[float], int]:
    """falwrap: map() over the jobs at ``rate`` per minute; (seconds, arrival times, outcomes ok)."""
    fal.reset_counters()
    config = FalConfig(
        api_key=fal.key, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=rate, burst=1),
        timeouts=Timeouts(image=600),
    )  # fmt: skip
    with FalClient(config) as client:
        requests = [{"prompt": f"product shot {i}", "model": MODEL} for i in range(jobs)]
        started = time.monotonic()
        ok = sum(outcome.ok for outcome in client.map(requests))
        elapsed = time.monotonic() - started
    return elapsed, list(fal.submit_times), ok


def run_pool(fal: FakeFal, jobs: int, rate: float, workers: int, *, paced: bool) -> tuple[float, list[float], int]:
    """The peer: a ThreadPoolExecutor over fal_client.subscribe, unpaced or paced by sleeping."""
    fal.reset_counters()
    client = raw_client(fal.url, fal.key, max_connections=workers * 2)
    gap = workers * 60.0 / rate  # each worker's own interval, so that together they keep the rate
    done = 0
    lock = threading.Lock()

    def worker(index: int) -> None:
        nonlocal done
        for i in range(index, jobs, workers):
            began = time.monotonic()
            client.subscribe(MODEL, {"prompt": f"product shot {i}"}, interval=0.1)
            with lock:
                done += 1
            if paced:
                time.sleep(max(0.0, gap - (time.monotonic() - began)))

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for result in [pool.submit(worker, w) for w in range(workers)]:
            result.result()
    elapsed = time.monotonic() - started
    client.close()
    return elapsed, list(fal.submit_times), done


def main(argv: list[str] | None = None) -> tuple[int, list[Summary]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_map", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=600.0, help="requests per minute")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds each job runs")
    parser.add_argument("--workers", type=int, default=16, help="the peer's thread pool size")
    args = parser.parse_args(argv)
    per_second = args.rate / 60.0
    ideal = (args.jobs - 1) / per_second + args.latency
    allowed = per_second * 10 + 2
    with FakeFal(latency=args.latency, concurrency=256) as fal:
        falwrap_s, falwrap_times, falwrap_ok = run_map(fal, args.jobs, args.rate)
        fast_s, fast_times, fast_ok = run_pool(fal, args.jobs, args.rate, args.workers, paced=False)
        paced_s, paced_times, paced_ok = run_pool(fal, args.jobs, args.rate, args.workers, paced=True)
    rows = [
        ("falwrap map()", falwrap_s, falwrap_times, falwrap_ok),
        (f"pool of {args.workers}, unpaced", fast_s, fast_times, fast_ok),
        (f"pool of {args.workers}, paced by sleeping", paced_s, paced_times, paced_ok),
    ]
    lines = [
        f"bench_map: {args.jobs} jobs of {args.latency:g} s at {args.rate:g} a minute; {machine()}",
        f"ideal: (N - 1) / rate + latency = {ideal:.1f} s; the rate allows {allowed:g} submissions in any 10 s",
        "",
        f"{'contender':36} {'jobs ok':>8} {'seconds':>9} {'x ideal':>8} {'most in 1 s':>12} {'most in 10 s':>13}",
    ]
    for name, seconds, times, ok in rows:
        one, ten = most_within(times, 1.0), most_within(times, 10.0)
        lines.append(f"{name:36} {ok:>8} {seconds:>9.1f} {seconds / ideal:>8.3f} {one:>12} {ten:>13}")
    falwrap_burst = most_within(falwrap_times, 10.0)
    within_ideal = falwrap_s <= ideal * (1 + GOAL_SLACK)
    checks = [
        (f"map() within {GOAL_SLACK:.0%} of the ideal ({falwrap_s:.1f} s vs {ideal:.1f} s)", within_ideal),
        (f"map() within the rate ({falwrap_burst} in 10 s, allowed {allowed:g})", falwrap_burst <= allowed),
        (f"map() completed every job ({falwrap_ok}/{args.jobs})", falwrap_ok == args.jobs),
    ]
    summary = [
        Summary(
            "batch at 600/min, 0.5 s jobs: time / ideal", f"{falwrap_s / ideal:.3f}x", f"{paced_s / ideal:.3f}x",
            f"{falwrap_s / paced_s:.3f}x", f"<= {1 + GOAL_SLACK:.2f}x ideal", checks[0][1] and checks[2][1],
        ),
        Summary(
            "batch at 600/min: most submissions in 10 s", str(falwrap_burst), str(most_within(fast_times, 10.0)),
            "-", f"<= {allowed:g}", checks[1][1],
        ),
    ]  # fmt: skip
    return report(lines, checks, summary)


if __name__ == "__main__":
    sys.exit(main()[0])
