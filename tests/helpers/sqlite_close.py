"""A child process closing a SQLite store while eight threads use it.

Usage: python -m tests.helpers.sqlite_close PATH
Prints one JSON line: how each thread's loop ended and the fewest rounds a thread made.
Run in a child because the failure it guards against is the interpreter crashing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone

from falwrap.backends.sqlite import SqliteStore
from falwrap.errors import BackendUnavailableError

THREADS = 8


def main() -> int:
    store = SqliteStore.from_url(f"sqlite:///{sys.argv[1]}", namespace="close")
    journal = store.journal
    ends: list[tuple[str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS + 1)

    def work() -> None:
        start.wait()
        rounds = 0
        try:
            while True:
                now = datetime.now(timezone.utc)
                journal.jobs(limit=50)
                journal.daily_cost(now.date())
                journal.heartbeat(f"owner-{threading.get_ident()}", ttl=60, now=now)  # a write
                rounds += 1
        except BackendUnavailableError:
            end = "closed"
        except Exception as exc:  # reported to the parent, which fails on it
            end = f"{type(exc).__name__}: {exc}"
        with lock:
            ends.append((end, rounds))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(0.3)
    store.close()
    for thread in threads:
        thread.join(10)
    print(json.dumps({"ends": sorted({end for end, _ in ends}), "threads": len(ends),
                      "fewest_rounds": min(rounds for _, rounds in ends)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
