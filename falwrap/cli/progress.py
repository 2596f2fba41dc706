"""A one-line live status for the ``falwrap`` command while a job runs.

It draws on a terminal only: piped or redirected stderr stays silent, so
scripts get clean output. The line shows the model, where the job stands
(queue position, running, completed) and the elapsed time, which a small
ticker thread keeps moving between fal's updates; new log lines from the job
scroll above it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from falwrap.results import Progress

__all__ = ["ProgressPrinter"]

#: Redraws per second of the elapsed time between fal's updates.
TICKS_PER_SECOND = 4

_SPINNER = "|/-\\"
_CLEAR = "\r\x1b[2K"


class ProgressPrinter:
    """Shows ``on_progress`` events on a terminal; does nothing when not enabled.

    Use as a context manager around the calls it follows, and pass
    :meth:`update` as their ``on_progress``. Thread-safe: the ticker and the
    caller draw under one lock.

    Args:
        stream: Where to draw (stderr).
        enabled: Draw at all; normally ``stream.isatty()``.
        redact: Applied to every text written (removes secrets).
        label: Shown before the first event arrives, e.g. ``"image"``.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool,
        redact: Callable[[str], str] = str,
        label: str = "",
    ) -> None:
        self._stream = stream
        self.enabled = enabled
        self._redact = redact
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = time.monotonic()
        self._model = label
        self._state = "submitting"
        self._frame = 0
        self._drawn = False

    def __enter__(self) -> ProgressPrinter:
        if self.enabled:
            self._started = time.monotonic()
            self._ticker = threading.Thread(target=self._tick, name="falwrap-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            self._erase()

    def begin(self, label: str) -> None:
        """Start following a new call, shown as ``label`` until fal names the model.

        Args:
            label: What is being made, e.g. ``"video"``.
        """
        with self._lock:
            self._model = label
            self._state = "submitting"
            self._started = time.monotonic()
            self._draw()

    def update(self, event: Progress) -> None:
        """The ``on_progress`` callback: print new log lines and redraw the status.

        Args:
            event: What the client reports.
        """
        if not self.enabled:
            return
        with self._lock:
            self._model = event.model_id
            self._started = time.monotonic() - event.elapsed_s
            if event.status == "IN_QUEUE":
                position = "?" if event.queue_position is None else str(event.queue_position)
                self._state = f"queued (queue position {position})"
            elif event.status == "IN_PROGRESS":
                self._state = "running"
            else:
                self._state = event.status.lower()
            for line in event.new_logs:
                message = str(line.get("message", "")).strip()
                if message:
                    self._line(f"  {event.model_id}: {message}")
            if event.status == "COMPLETED":
                self._line(f"{event.model_id}: completed in {event.elapsed_s:.1f} s (request {event.request_id})")
                self._state = "fetching the result"
            self._draw()

    def set_state(self, state: str) -> None:
        """Replace the status text (``saving files``...) and redraw.

        Args:
            state: The new status text.
        """
        with self._lock:
            self._state = state
            self._draw()

    def note(self, text: str) -> None:
        """Print one line above the status (a retry warning, a saved file).

        Args:
            text: The line, without a newline.
        """
        if not self.enabled:
            return
        with self._lock:
            self._line(text)
            self._draw()

    # -- drawing, always under the lock ---------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.wait(1 / TICKS_PER_SECOND):
            with self._lock:
                self._frame += 1
                self._draw()

    def _line(self, text: str) -> None:
        self._write(f"{_CLEAR}{self._redact(text)}\n")
        self._drawn = False

    def _draw(self) -> None:
        if not self.enabled or self._stop.is_set():
            return
        elapsed = time.monotonic() - self._started
        spinner = _SPINNER[self._frame % len(_SPINNER)]
        self._write(f"{_CLEAR}{spinner} {self._redact(self._model)}  {self._state}  {elapsed:.1f} s")
        self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self._write(_CLEAR)
            self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken terminal must not fail the generation being watched.
            self.enabled = False
