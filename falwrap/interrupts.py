"""Ctrl-C that waits for an exchange fal may act on, so its answer is never lost on the way back.

A ``KeyboardInterrupt`` raised while a submission's answer is in flight leaves a
job running (and billed) at fal whose request id never reached the client:
nothing can cancel it. :func:`deferred_interrupt` holds the first SIGINT until
the exchange ends (it is bounded by the per-exchange timeout), then the caller
cancels the job it now knows about and raises ``KeyboardInterrupt`` itself. A
second Ctrl-C is not held: whoever presses it twice means it.

Only the main thread receives signals, and only Python's default handler is
replaced: an application with its own SIGINT handler keeps it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import attrs

__all__ = ["Deferred", "deferred_interrupt"]


@attrs.define
class Deferred:
    """What happened while an interrupt was deferred."""

    #: A Ctrl-C arrived during the block; the caller must raise ``KeyboardInterrupt`` after it.
    pending: bool = False


@contextmanager
def deferred_interrupt() -> Iterator[Deferred]:
    """Hold the first SIGINT for the duration of the block (main thread, default handler only)."""
    state = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # pragma: no cover - signals unavailable (embedded interpreters)
        yield state
        return
    if previous is not signal.default_int_handler:
        yield state
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        if state.pending:
            signal.default_int_handler(signum, frame)
        state.pending = True

    signal.signal(signal.SIGINT, hold)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
