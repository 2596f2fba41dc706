"""Benchmark: CostLedger against a seed-style call logger at 10k, 100k and 1M records.

Claim: ``daily_cost()`` and ``stats()`` take the same time however many calls were
recorded (>= 1000x faster than scanning a list at 1M records), and memory stays
bounded by ``max_records`` while the list grows without end.

The peer, :class:`NaiveLogger`, is what a first version usually looks like: a list of
dicts with float costs, scanned in full for every daily total and every stats call.

Run from the repository root::

    python -m benchmarks.bench_ledger            # 10k, 100k, 1M (about a minute)
    python -m benchmarks.bench_ledger --sizes 10000 100000

Two passes over the same synthetic calls: one with tracemalloc on, measuring what
each structure retains; one with it off, timing ``record()`` (on pre-built inputs,
construction excluded) and the queries. Exit status 0 when the goals are met.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from falwrap.ledger import CallRecord, CostLedger

MODELS = ("fal-ai/flux/dev", "fal-ai/flux/schnell", "fal-ai/kling-video", "fal-ai/recraft-v3")
COSTS = (Decimal("0.025"), Decimal("0.003"), Decimal("0.35"), Decimal("0.04"))
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
#: Calls are spread over 30 days whatever the size, so daily totals have real work to do.
SPAN = timedelta(days=30)
CHUNK = 10_000
MAX_RECORDS = 10_000


class NaiveLogger:
    """The seed-style peer: a list of dicts, float money, every query a full scan."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def log_call(
        self, timestamp: datetime, model: str, operation: str, duration_ms: float, cost: float, success: bool
    ) -> None:
        self.calls.append(
            {
                "timestamp": timestamp,
                "model": model,
                "operation": operation,
                "duration_ms": duration_ms,
                "cost": cost,
                "success": success,
            }
        )

    def daily_cost(self, day: date) -> float:
        return float(sum(c["cost"] for c in self.calls if c["timestamp"].date() == day))

    def stats(self) -> dict[str, Any]:
        def summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
            durations = sorted(c["duration_ms"] for c in calls)
            n = len(calls)
            ok = sum(1 for c in calls if c["success"])
            return {
                "total_calls": n,
                "successes": ok,
                "failures": n - ok,
                "success_rate": ok / n if n else None,
                "total_cost_usd": sum(c["cost"] for c in calls),
                "avg_duration_ms": sum(durations) / n if n else None,
                "p50_duration_ms": durations[int(0.50 * (n - 1))] if n else None,
                "p95_duration_ms": durations[int(0.95 * (n - 1))] if n else None,
            }

        by_model: dict[str, list[dict[str, Any]]] = {}
        for c in self.calls:
            by_model.setdefault(c["model"], []).append(c)
        return {**summary(self.calls), "by_model": {m: summary(cs) for m, cs in by_model.items()}}


def calls(first: int, count: int, total: int) -> Iterator[tuple[datetime, str, float, Decimal, bool]]:
    """Deterministic synthetic calls ``first .. first+count``, of ``total`` spread over SPAN."""
    step = SPAN / total
    for i in range(first, first + count):
        k = i % len(MODELS)
        yield START + step * i, MODELS[k], 200.0 + (i * 7919) % 20_000, COSTS[k], i % 17 != 0


def make_record(ts: datetime, model: str, duration: float, cost: Decimal, ok: bool) -> CallRecord:
    return CallRecord(ts, model, "generate", duration, cost, ok, None if ok else "RATE_LIMIT")


def fill(ledger: CostLedger, naive: NaiveLogger, first: int, count: int, total: int) -> tuple[float, float]:
    """Add calls to both, in chunks of pre-built inputs; returns seconds spent in record() and log_call()."""
    t_ledger = t_naive = 0.0
    for start in range(first, first + count, CHUNK):
        batch = list(calls(start, min(CHUNK, first + count - start), total))
        records = [make_record(*c) for c in batch]
        rows = [(ts, m, "generate", d, float(cost), ok) for ts, m, d, cost, ok in batch]
        t0 = time.perf_counter()
        for r in records:
            ledger.record(r)
        t1 = time.perf_counter()
        for row in rows:
            naive.log_call(*row)
        t2 = time.perf_counter()
        t_ledger += t1 - t0
        t_naive += t2 - t1
    return t_ledger, t_naive


def best_time(fn: Callable[[], object], *, budget: float = 0.3, max_runs: int = 1000) -> float:
    """The fastest of repeated runs, stopping after ``budget`` seconds (at least 2 runs)."""
    best = float("inf")
    spent = 0.0
    runs = 0
    while runs < 2 or (spent < budget and runs < max_runs):
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed)
        spent += elapsed
        runs += 1
    return best


def retained_bytes(root: object) -> int:
    """Bytes of every object reachable from ``root``, each counted once (a deep ``sys.getsizeof``).

    Classes, modules and functions are shared with the rest of the program and not counted.
    """
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def measure_tracemalloc(sizes: list[int]) -> dict[int, tuple[int, int]]:
    """Bytes each structure retains at each size per tracemalloc, calls generated fresh as in real use.

    Exact but slow: tracing every allocation costs about a minute per million calls here.
    """
    total = sizes[-1]
    out: dict[int, tuple[int, int]] = {}
    ledger = CostLedger(max_records=MAX_RECORDS, clock=lambda: START, metrics=False)
    naive = NaiveLogger()
    mem_ledger = mem_naive = 0
    done = 0
    tracemalloc.start()
    try:
        for size in sizes:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for c in calls(done, size - done, total):
                ledger.record(make_record(*c))
            gc.collect()
            middle = tracemalloc.get_traced_memory()[0]
            for ts, m, d, cost, ok in calls(done, size - done, total):
                naive.log_call(ts, m, "generate", d, float(cost), ok)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            mem_ledger += middle - before
            mem_naive += after - middle
            out[size] = (mem_ledger, mem_naive)
            done = size
    finally:
        tracemalloc.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print one table, return 0 when every goal is met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="measure memory with tracemalloc in an extra pass (exact, but about a minute per million calls)",
    )
    args = parser.parse_args(argv)
    sizes: list[int] = sorted(args.sizes)
    total = sizes[-1]
    t_start = time.perf_counter()

    traced = measure_tracemalloc(sizes) if args.tracemalloc else None

    ledger = CostLedger(max_records=MAX_RECORDS, clock=lambda: START + SPAN / 2, metrics=False)
    naive = NaiveLogger()
    day = (START + SPAN / 2).date()
    rows = []
    done = 0
    for size in sizes:
        t_ledger, t_naive = fill(ledger, naive, done, size - done, total)
        added = size - done
        done = size
        assert ledger.daily_cost(day) == Decimal(str(round(naive.daily_cost(day), 6)))
        assert ledger.stats()["total_calls"] == naive.stats()["total_calls"] == size
        q = {
            "daily_ledger": best_time(lambda: ledger.daily_cost(day)),
            "daily_naive": best_time(lambda: naive.daily_cost(day), max_runs=3),
            "stats_ledger": best_time(ledger.stats),
            "stats_naive": best_time(naive.stats, max_runs=3),
        }
        memory = traced[size] if traced else (retained_bytes(ledger), retained_bytes(naive))
        rows.append((size, added / t_ledger, added / t_naive, q, *memory))

    mib = 1024 * 1024
    header = (
        f"{'records':>9} | {'record()/s':>10} {'naive/s':>10} | {'daily_cost':>10} {'naive':>10} {'speedup':>9} |"
        f" {'stats()':>10} {'naive':>10} {'speedup':>9} | {'memory':>8} {'naive':>9} {'ratio':>6}"
    )
    how = "tracemalloc" if traced else "deep sizeof of what each structure retains"
    print(f"CostLedger(max_records={MAX_RECORDS:,}) vs a list-of-dicts logger; best-of-runs query times; memory: {how}")
    print(header)
    print("-" * len(header))
    for size, rps_l, rps_n, q, mem_l, mem_n in rows:
        daily_l, daily_n, stats_l, stats_n = q["daily_ledger"], q["daily_naive"], q["stats_ledger"], q["stats_naive"]
        print(
            f"{size:>9,} | {rps_l:>10,.0f} {rps_n:>10,.0f} |"
            f" {daily_l * 1e6:>8.1f}us {daily_n * 1e6:>8.0f}us {daily_n / daily_l:>8,.0f}x |"
            f" {stats_l * 1e6:>8.1f}us {stats_n * 1e6:>8.0f}us {stats_n / stats_l:>8,.0f}x |"
            f" {mem_l / mib:>5.1f}MiB {mem_n / mib:>6.1f}MiB {mem_n / mem_l:>5.1f}x"
        )

    first, last = rows[0], rows[-1]
    goals = {
        f"daily_cost >= 1000x faster at {last[0]:,}": last[3]["daily_naive"] / last[3]["daily_ledger"] >= 1000,
        f"stats() >= 1000x faster at {last[0]:,}": last[3]["stats_naive"] / last[3]["stats_ledger"] >= 1000,
        # Flat means within noise of the smallest size, not within a constant factor of the data.
        "daily_cost flat (largest <= 3x smallest)": last[3]["daily_ledger"] <= 3 * first[3]["daily_ledger"],
        "stats() flat (largest <= 3x smallest)": last[3]["stats_ledger"] <= 3 * first[3]["stats_ledger"],
        "ledger memory bounded (largest <= 1.5x smallest)": last[4] <= 1.5 * first[4],
    }
    for goal, met in goals.items():
        print(f"{'PASS' if met else 'FAIL'}  {goal}")
    print(f"total runtime {time.perf_counter() - t_start:.1f} s")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
