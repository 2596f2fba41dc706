"""A worker process for multi-process tests: N threads calling FalClient.image(), outcomes as JSON.

Configured entirely from the environment (FAL_KEY, FAL_BASE_URL, FALWRAP_REDIS_URL,
FAL_DAILY_BUDGET_USD, FAL_MAX_CONCURRENT, ...) like a web worker would be.
Usage: python -m tests.helpers.worker THREADS CALLS_PER_THREAD MODEL
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter

from falwrap import FalClient, FalConfig, FalwrapError, set_testing


def main() -> int:
    threads, calls, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    set_testing(True)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    with FalClient(FalConfig.from_env(None)) as client:
        barrier = threading.Barrier(threads)

        def work() -> None:
            barrier.wait()
            for _ in range(calls):
                try:
                    client.image("a cat", model=model)
                    outcome = "ok"
                except FalwrapError as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes[outcome] += 1

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    print(json.dumps(dict(outcomes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
