"""Run every benchmark and print one combined table: ``python -m benchmarks``.

Run from the repository root::

    python -m benchmarks                                   # the full suite, about 14 minutes on 2 cores
    python -m benchmarks --quick                           # smaller runs, about 5 minutes
    python -m benchmarks --markdown benchmarks/RESULTS.md  # also write the whole output there

Each benchmark is one script with its own ``main()`` (run it alone with
``python -m benchmarks.bench_<name>``) and prints its own detailed table with
ratios against its peer; this runner runs them one after the other in this
process (the client benchmarks start their servers, FakeFal and MiniFal, in a
child process where they say so, and print what each does differently from fal)
and ends with one line per goal. Exit status 0 when every goal is met.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from benchmarks import (
    bench_import,
    bench_journal,
    bench_latency,
    bench_ledger,
    bench_limiter,
    bench_long_jobs,
    bench_map,
    bench_overhead,
    bench_throughput,
    soak,
)
from benchmarks._peers import Summary, machine

#: A benchmark run by the suite: the exit status and its summary lines, given --quick.
Runner = Callable[[bool], tuple[int, list[Summary]]]

_GOAL_LINE = re.compile(r"^\[?(PASS|FAIL)\]?\s+(.*)$")
_FIGURE = re.compile(r"\(([^()]*)\)\s*$")


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy (for --markdown and to read other scripts' goal lines)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._stream.flush()
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def goal_lines(output: str) -> list[Summary]:
    """Summary lines made from a script's ``PASS``/``FAIL`` lines (the limiter and ledger scripts).

    A figure in parentheses at the end of the goal goes to the falwrap column, or
    to the ratio column when it is one (``21.9x``).
    """
    rows = []
    for line in output.splitlines():
        match = _GOAL_LINE.match(line.strip())
        if not match:
            continue
        text, figure = match[2], _FIGURE.search(match[2])
        claim = text[: figure.start()].strip() if figure else text
        value = figure[1] if figure else "-"
        is_ratio = value.endswith("x")
        rows.append(
            Summary(claim, "-" if is_ratio else value, "-", value if is_ratio else "-", "as stated", match[1] == "PASS")
        )
    return rows


def ledger_rows(output: str) -> list[Summary]:
    """The ledger's largest size as summary lines with ratios (its goal lines carry no figures)."""
    data = [line for line in output.splitlines() if line.count("|") == 4 and line.strip()[:1].isdigit()]
    if not data:
        return []
    size, _record, daily, stats, memory = (part.split() for part in data[-1].split("|"))
    n = size[0]
    return [
        Summary(f"ledger daily_cost() at {n} records", daily[0], daily[1], daily[2], ">= 1000x", True),
        Summary(f"ledger stats() at {n} records", stats[0], stats[1], stats[2], ">= 1000x", True),
        Summary(f"ledger memory at {n} records", memory[0], memory[1], memory[2], "bounded", True),
    ]


def _mine(module: object, quick: bool) -> tuple[int, list[Summary]]:
    bench = module.bench  # type: ignore[attr-defined]
    status, summary = bench(["--quick"] if quick else [])
    return int(status), list(summary)


def _limiter(quick: bool) -> tuple[int, list[Summary]]:
    # bench_limiter has no options: its run is already short (about 40 s).
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        status = bench_limiter.main()
    return status, goal_lines(tee.copy.getvalue())


def _soak(quick: bool) -> tuple[int, list[Summary]]:
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        status = soak.main(["--seconds", "30"] if quick else [])
    return status, goal_lines(tee.copy.getvalue())


def _ledger(quick: bool) -> tuple[int, list[Summary]]:
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        status = bench_ledger.main(["--sizes", "10000", "100000"] if quick else [])
    output = tee.copy.getvalue()
    # The ratios come from the table; the goal lines say which goals passed.
    rows = ledger_rows(output)
    goals = goal_lines(output)
    if rows and len(goals) == 5:
        speed_daily, speed_stats, flat_daily, flat_stats, bounded = (g.ok for g in goals)
        rows = [
            replace(rows[0], ok=speed_daily and flat_daily),
            replace(rows[1], ok=speed_stats and flat_stats),
            replace(rows[2], ok=bounded),
        ]
        return status, rows
    return status, goals


BENCHMARKS: list[tuple[str, str, Runner]] = [
    ("bench_import", "import time of falwrap vs fal_client", lambda q: _mine(bench_import, q)),
    ("bench_overhead", "per-call time, falwrap run vs fal_client subscribe", lambda q: _mine(bench_overhead, q)),
    ("bench_latency", "requests per job and completion->return latency", lambda q: _mine(bench_latency, q)),
    ("bench_throughput", "64 threads on one client: jobs/s and CPU per job", lambda q: _mine(bench_throughput, q)),
    ("bench_long_jobs", "64 threads following 1 s jobs: CPU, requests, latency", lambda q: _mine(bench_long_jobs, q)),
    ("bench_limiter", "leaky bucket vs pyrate-limiter and limits", _limiter),
    ("bench_ledger", "cost ledger vs a list-of-dicts logger", _ledger),
    ("bench_journal", "the journal's cost per job, per store", lambda q: _mine(bench_journal, q)),
    (
        "bench_map",
        "a batch at 600 a minute: map() vs a thread pool",
        lambda q: bench_map.main(["--jobs", "200"] if q else []),
    ),
    ("soak", "32 threads, 10% faults for 2 minutes: ledger vs fal's bill", _soak),
]


def combined(rows: list[tuple[str, Summary]]) -> list[str]:
    """The suite's table: one line per goal."""
    width = max(len(s.claim) for _, s in rows)
    header = f"{'benchmark':<16} {'claim':<{width}} {'falwrap':>20} {'peer':>20} {'ratio':>8} {'goal':>14} {'':>4}"
    lines = [header, "-" * len(header)]
    for name, s in rows:
        lines.append(
            f"{name:<16} {s.claim:<{width}} {s.falwrap:>20} {s.peer:>20} {s.ratio:>8} {s.goal:>14} "
            f"{'PASS' if s.ok else 'FAIL':>4}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the suite; 0 when every goal is met."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs of every benchmark")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (e.g. bench_latency)")
    parser.add_argument("--markdown", type=Path, help="also write the whole output to this Markdown file")
    args = parser.parse_args(argv)
    command = "python -m benchmarks" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    tee = _Tee(sys.stdout)
    started = time.perf_counter()
    rows: list[tuple[str, Summary]] = []
    failed: list[str] = []
    with contextlib.redirect_stdout(tee):
        print(f"$ {command}")
        print(f"machine: {machine()}")
        print(f"platform: {platform.platform()}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
        for name, what, runner in BENCHMARKS:
            if args.only and name not in args.only:
                continue
            print()
            print(f"=== {name}: {what} ===")
            t0 = time.perf_counter()
            try:
                status, summary = runner(args.quick)
            except Exception as exc:  # one broken benchmark must not hide the others' results
                print(f"ERROR: {type(exc).__name__}: {exc}")
                status, summary = 1, [Summary(f"{name} crashed", "-", "-", "-", "-", False)]
            print(f"({name}: {time.perf_counter() - t0:.1f} s)")
            if status != 0:
                failed.append(name)
            rows.extend((name, s) for s in summary)
        print()
        print(f"=== summary ({time.perf_counter() - started:.0f} s in all) ===")
        print("\n".join(combined(rows)))
        print()
        print("all goals met" if not failed else f"goals missed in: {', '.join(failed)}")
    if args.markdown is not None:
        text = tee.copy.getvalue()
        args.markdown.write_text(
            "# Benchmark results\n\n"
            "The whole output of the benchmark suite, as printed; see each script's docstring\n"
            "in `benchmarks/` for what it measures and why.\n\n"
            f"```text\n{text}```\n"
        )
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
