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


#: How late a step may run on a loaded 2-core machine (xdist workers, eight threads sharing one
#: GIL): a timestamp taken after ``acquire()`` returns lags the grant, and a request reaches the
#: store after the call was made, by up to this much. Two grants a full interval apart can
#: therefore be noted closer together.
NOTING_DELAY = 0.25


def max_granted_per(times: list[float], period: float = 1.0) -> int:
    """Most grants given within any ``period`` seconds, as far as timestamps noted after each grant tell.

    A timestamp lags its grant by up to :data:`NOTING_DELAY`, so grants noted within
    ``period - NOTING_DELAY`` of each other were given within ``period``: counting those windows
    keeps the bound exact (a limiter granting more per period is still caught) under load.
    """
    return max_in_window(times, period - NOTING_DELAY)


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
