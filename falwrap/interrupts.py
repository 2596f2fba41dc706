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

import importlib
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import FrameType, ModuleType
from typing import Any

import attrs

__all__ = ["Deferred", "deferred_interrupt"]


def _c_signal() -> ModuleType:
    # The signal module wraps CPython's _signal to hand handlers back as enums where it
    # can, which for a Python handler means raising and catching a ValueError inside the
    # enum machinery: three times per submission, more than the rest of this module costs.
    # _signal's functions do the same otherwise; other interpreters get the wrappers.
    try:
        return importlib.import_module("_signal")
    except ImportError:  # pragma: no cover - not CPython
        return signal


_getsignal: Callable[[int], Any] = _c_signal().getsignal
_setsignal: Callable[[int, Any], Any] = _c_signal().signal
_SIGINT = int(signal.SIGINT)


@attrs.define
class Deferred:
    """What happened while an interrupt was deferred."""

    #: A Ctrl-C arrived during the block; the caller must raise ``KeyboardInterrupt`` after it.
    pending: bool = False


def deferred_interrupt() -> AbstractContextManager[Deferred]:
    """Hold the first SIGINT for the duration of the block (main thread, default handler only)."""
    return _Deferral()


class _Deferral:
    """The block of :func:`deferred_interrupt` (a class: it wraps every submission, in every thread)."""

    __slots__ = ("_previous", "_state")

    def __init__(self) -> None:
        self._state = Deferred()
        self._previous: Any = None

    def __enter__(self) -> Deferred:
        if threading.current_thread() is not threading.main_thread():
            return self._state
        try:
            previous = _getsignal(_SIGINT)
        except ValueError:  # pragma: no cover - signals unavailable (embedded interpreters)
            return self._state
        if previous is signal.default_int_handler:
            _setsignal(_SIGINT, self._hold)
            self._previous = previous
        return self._state

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if self._state.pending:
            signal.default_int_handler(signum, frame)
        self._state.pending = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            _setsignal(_SIGINT, self._previous)
