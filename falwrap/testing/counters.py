"""Thread-safe tallies of what the emulator received."""

from __future__ import annotations

import threading
from collections import Counter

import attrs

from falwrap.testing.faults import ROUTES

__all__ = ["RequestCounters"]


@attrs.define
class RequestCounters:
    """Requests received per route and per action (faulted ones included) and submit arrival times."""

    _counts: Counter[str] = attrs.field(factory=Counter, init=False)
    _actions: Counter[str] = attrs.field(factory=Counter, init=False)
    _submit_times: list[float] = attrs.field(factory=list, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def hit(self, route: str, at: float, action: str | None = None) -> None:
        """Count one request.

        Args:
            route: its route name.
            at: monotonic arrival time (kept for submits).
            action: the finer name of what it asks (``upload_token``, ``upload_cdn``...).
        """
        with self._lock:
            self._counts[route] += 1
            if action is not None:
                self._actions[action] += 1
            if route == "submit":
                self._submit_times.append(at)

    def counts(self) -> dict[str, int]:
        """A snapshot of the per-route counts.

        Returns:
            Every route in ``ROUTES``, zero when none arrived (requests fal would 404 are not counted).
        """
        with self._lock:
            snapshot = dict.fromkeys(ROUTES, 0)
            snapshot.update(self._counts)
            return snapshot

    def actions(self) -> dict[str, int]:
        """A snapshot of the per-action counts.

        Returns:
            Only the actions that arrived at least once.
        """
        with self._lock:
            return dict(self._actions)

    def submit_times(self) -> list[float]:
        """Arrival times of submits, in order.

        Returns:
            A copy of the list.
        """
        with self._lock:
            return list(self._submit_times)

    def reset(self) -> None:
        """Zero everything."""
        with self._lock:
            self._counts.clear()
            self._actions.clear()
            self._submit_times.clear()
