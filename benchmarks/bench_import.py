"""Benchmark: what ``import falwrap`` costs, measured with ``python -X importtime``, against ``import fal_client``.

Run from the repository root::

    python -m benchmarks.bench_import            # 7 runs of each statement
    python -m benchmarks.bench_import -n 15

Claim: falwrap's own modules import in under 150 ms (the sum of the ``self``
times of every ``falwrap*`` module), so a CLI or a web worker pays little for
``import falwrap``; the client stack (fal_client, httpx) loads only when a
``FalClient`` is first used.

Each statement runs in a fresh interpreter (``sys.executable -X importtime -c
...``), the statements interleaved, ``-n`` times each; reported are medians.
``total`` is the cumulative time of the statement's top-level module;
``falwrap own`` sums the self times of falwrap's modules only. The peer row is
``import fal_client``, the package falwrap wraps.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass, field

from benchmarks._peers import Summary, machine, median, report

GOAL_OWN_MS = 150.0
_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


@dataclass
class Statement:
    label: str
    code: str
    top: tuple[str, ...]
    own: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def parse(stderr: str, top: tuple[str, ...]) -> tuple[float, float]:
    """(falwrap's own ms, the statement's ms) from ``-X importtime`` output.

    The statement's time is the cumulative time of its top-level imports named in ``top``
    (interpreter start-up imports, also listed, are left out).
    """
    own_us = 0
    total_us = 0
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        self_us, cumulative_us, indent, name = int(match[1]), int(match[2]), match[3], match[4]
        if name == "falwrap" or name.startswith("falwrap."):
            own_us += self_us
        if name in top and indent == " ":
            total_us += cumulative_us
    return own_us / 1000, total_us / 1000


def measure(statement: Statement) -> None:
    """One fresh interpreter running the statement."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement.code],
        capture_output=True,
        text=True,
        check=True,
    )
    own, total = parse(done.stderr, statement.top)
    statement.own.append(own)
    statement.total.append(total)


def run(runs: int) -> tuple[list[str], list[tuple[str, bool]], list[Summary]]:
    """Measure; return the table lines, the goal checks and the suite summary."""
    statements = [
        Statement("import falwrap", "import falwrap", ("falwrap",)),
        # What the first use of FalClient loads. An import statement, not ``from falwrap import
        # FalClient``: importtime does not time modules loaded through importlib (the lazy __getattr__).
        Statement("import falwrap.client", "import falwrap.client", ("falwrap", "falwrap.client")),
        Statement("import fal_client (peer)", "import fal_client", ("fal_client",)),
    ]
    for _ in range(runs):
        for statement in statements:
            measure(statement)
    ours, client, peer = statements
    header = f"{'statement':<32} {'falwrap own ms':>14} {'total ms':>9} {'min':>7} {'max':>7} {'x fal_client':>12}"
    lines = [header, "-" * len(header)]
    base = median(peer.total)
    for s in statements:
        lines.append(
            f"{s.label:<32} {median(s.own):>14.1f} {median(s.total):>9.1f} {min(s.total):>7.1f} "
            f"{max(s.total):>7.1f} {median(s.total) / base:>12.3f}"
        )
    own = median(ours.own)
    checks = [(f"import falwrap: falwrap's own time < {GOAL_OWN_MS:g} ms (median {own:.1f} ms)", own < GOAL_OWN_MS)]
    summary = [
        Summary(
            "import falwrap: own (total) ms",
            f"{own:.0f} ({median(ours.total):.0f}) ms",
            f"{base:.0f} ms",
            f"{median(ours.total) / base:.3f}x",
            f"own < {GOAL_OWN_MS:g} ms",
            own < GOAL_OWN_MS,
        )
    ]
    lines.append(
        f"(FalClient's stack: falwrap own {median(client.own):.1f} ms of {median(client.total):.1f} ms, "
        "loaded on first use of FalClient)"
    )
    return lines, checks, summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; 0 when falwrap meets its goal."""
    return bench(argv)[0]


def bench(argv: list[str] | None = None) -> tuple[int, list[Summary]]:
    """Run the benchmark and print the table; the exit status and the suite's summary lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=7, help="fresh interpreters per statement (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    print(machine())
    print(f"python -X importtime -c <statement>, {runs} fresh interpreters each, interleaved; medians")
    print()
    return report(*run(runs))


if __name__ == "__main__":
    sys.exit(main())
