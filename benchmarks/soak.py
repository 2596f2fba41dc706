"""Soak: many threads, faults in every phase (after completion included), then ledger == fal's bill exactly.

Run from the repository root::

    python -m benchmarks.soak                      # 32 threads for 120 s, about 10% of requests faulted
    python -m benchmarks.soak --seconds 20         # a shorter run
    python -m benchmarks.soak --store sqlite       # the journal in a SQLite file instead of memory

FakeFal (in this process) bills as fal may: a running model ignores a cancel and
is billed, a failed job is billed for the GPU time it used, video by its real
length. A fault thread keeps about one request in ten faulted, in every phase:
submit (503, 429, a reset before fal saw it, an answer lost after fal accepted
the job), status, stream (503, a stream cut at completion), result (one 503, or
503 on every retry, after fal completed and billed the job), failed jobs with
billable units, and calls whose deadline passes while their job runs (cancelled,
and billed when the model ignores it). Every call ends in a result or one typed
error; then ``reconcile()`` settles every job left open, and the ledger must
equal FakeFal's bill to the micro-dollar. Exit status 0 when it does.

This is a correctness soak, not a speed claim: its figure is the difference
between the ledger and the bill (the first round's journal-less client was off
by -$0.215 in the same soak), printed with the counts that make it up.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from falwrap import FalClient, FalConfig, FalwrapError, RateLimitConfig, RetryConfig, Timeouts, set_testing
from falwrap.testing import FakeFal, Fault, JobFailure

MODELS = ("fal-ai/flux/dev", "fal-ai/flux/schnell", "fal-ai/flux-pro/v1.1")
#: Sizes every model above takes (flux-pro caps custom sizes at 1440 px).
SIZES = ("square", "square_hd", "landscape_16_9", {"width": 1440, "height": 1024})
RETRIES = 2


def _faults(rng: random.Random) -> list[tuple[str, Fault, int]]:
    """The menu the fault thread draws from: (route, fault, times)."""
    return [
        ("submit", Fault.http(503), 1),
        ("submit", Fault.rate_limited(), 1),
        ("submit", Fault.reset(), 1),
        ("submit", Fault.after(Fault.reset()), 1),
        ("status", Fault.nginx(502), 1),
        ("stream", Fault.http(503), 1),
        ("stream", Fault.cut_after(rng.randint(0, 2)), 1),
        ("result", Fault.http(503), 1),
        ("result", Fault.http(503), RETRIES + 1),
        ("result", Fault.reset(), 1),
    ]


def run(seconds: float, threads: int, store: str, fault_rate: float, seed: int) -> int:
    """Run the soak; print the ledger against the bill; 0 when they are equal."""
    rng = random.Random(seed)
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp, set_testing(True), FakeFal(latency=0.02, concurrency=64) as fal:
        store_url = "memory:" if store == "memory" else f"sqlite:///{Path(tmp) / 'soak.db'}"
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, store_url=store_url,
            timeouts=Timeouts(image=5.0, queue_status=0.5, model_list=2.0),
            retry=RetryConfig(max_retries=RETRIES, base_delay=0.01, max_delay=0.05),
            rate_limit=RateLimitConfig(requests_per_minute=6_000_000, burst=1000),
        )  # fmt: skip
        with FalClient(config) as client:
            menu = _faults(rng)

            def inject() -> None:
                # About fault_rate of the requests: a call makes about 3, at a few hundred calls a second.
                while not stop.wait(0.01):
                    if rng.random() < fault_rate * 3:
                        route, fault, times = rng.choice(menu)
                        fal.inject(route, fault, times=times)
                    if rng.random() < fault_rate / 2:
                        fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))

            def call(worker: int) -> None:
                local = random.Random(seed * 1000 + worker)
                while not stop.is_set():
                    model = local.choice(MODELS)
                    # One call in fifty has a deadline shorter than its job: cancelled while it runs.
                    timeout = 0.01 if local.random() < 0.02 else None
                    try:
                        client.image("a cat", model=model, size=local.choice(SIZES), timeout=timeout)
                        outcome = "ok"
                    except FalwrapError as exc:
                        outcome = type(exc).__name__
                    with lock:
                        outcomes[outcome] += 1

            pool = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(threads)]
            faulter = threading.Thread(target=inject, daemon=True)
            started = time.monotonic()
            faulter.start()
            for t in pool:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in pool:
                t.join()
            faulter.join()
            elapsed = time.monotonic() - started
            fal.clear_faults()
            before = client.daily_cost()
            # A submission missing from fal's request list is taken as never sent only 30 s after
            # its call ended (the list may lag): reconcile until then.
            deadline = time.monotonic() + 90
            while True:
                report = client.reconcile(timeout=60)
                if report.still_running == report.unknown == 0 or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            ledger, bill = client.daily_cost(), fal.billed_total
            calls = sum(outcomes.values())
            faulted = sum(fal.counters.values())
            print(f"soak: {threads} threads, {elapsed:.0f} s, store {store}, {calls} calls, {faulted} requests")
            print(f"outcomes: {dict(sorted(outcomes.items(), key=lambda kv: -kv[1]))}")
            print(f"journal jobs: {len(client.ledger.journal.jobs())}, billed jobs at FakeFal: {len(fal.billing)}")
            print(f"before reconcile: ledger ${before} (jobs left open are charged at their estimates)")
            left = f"still running {report.still_running}, unknown {report.unknown}"
            print(f"reconcile: settled {report.settled}, {left}")
            print(f"ledger ${ledger}  fal's bill ${bill}  difference ${ledger - bill}")
            stats = client.stats()
            assert stats["total_calls"] == calls, (stats["total_calls"], calls)
            ok = ledger == bill and stats["total_cost_usd"] == bill and report.unknown == 0
            print("PASS ledger == bill to the micro-dollar" if ok else "FAIL ledger != bill")
            return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return run(args.seconds, args.threads, args.store, args.fault_rate, args.seed)
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
