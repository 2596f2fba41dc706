"""Timing helpers shared by the limiter tests (in-process and Redis)."""

from __future__ import annotations

import bisect
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most timestamps inside any closed interval of ``window`` seconds."""
    times = sorted(times)
    return max((bisect.bisect_right(times, t + window) - i for i, t in enumerate(times)), default=0)


@contextmanager
def interrupt_main_after(delay: float) -> Iterator[None]:
    """Raise KeyboardInterrupt in the main thread after ``delay`` seconds, as Ctrl-C would."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(delay, signal.pthread_kill, args=(threading.main_thread().ident, signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGUSR1, previous)
