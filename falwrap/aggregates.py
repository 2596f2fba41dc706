"""The stats every store reports, computed the same way everywhere.

``stats()`` of every journal returns :func:`summarize` dicts; durations come from
a bounded window of recent calls so percentiles stay cheap at any volume.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from falwrap.money import from_micros

__all__ = ["DurationWindow", "Totals", "percentile", "summarize"]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted data by linear interpolation (numpy's default), or ``None``.

    For 1..100 this gives p50 = 50.5 and p95 = 95.05.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    low = float(sorted_values[lo])
    return low + (float(sorted_values[hi]) - low) * (pos - lo)


def summarize(
    calls: int, successes: int, cost_micros: int, duration_sum: float, sorted_durations: Sequence[float]
) -> dict[str, Any]:
    """One scope's stats: everything ``stats()`` returns except ``by_model``."""
    return {
        "total_calls": calls,
        "successes": successes,
        "failures": calls - successes,
        "success_rate": successes / calls if calls else None,
        "total_cost_usd": from_micros(cost_micros),
        "avg_duration_ms": duration_sum / calls if calls else None,
        "p50_duration_ms": percentile(sorted_durations, 0.50),
        "p95_duration_ms": percentile(sorted_durations, 0.95),
    }


@attrs.define
class DurationWindow:
    """The last ``size`` durations, kept both in arrival order and sorted (so percentiles are O(1))."""

    size: int
    order: deque[float] = attrs.field(factory=deque)
    ordered: list[float] = attrs.field(factory=list)

    def add(self, value: float) -> None:
        """Add one duration, dropping the oldest beyond ``size``."""
        if len(self.order) >= self.size:
            oldest = self.order.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, oldest)]
        self.order.append(value)
        bisect.insort(self.ordered, value)


@attrs.define
class Totals:
    """Running counters of one scope (all calls, or one model). Not thread-safe: the owner locks."""

    window: DurationWindow
    calls: int = 0
    successes: int = 0
    cost_micros: int = 0
    duration_sum: float = 0.0

    def add_call(self, success: bool, duration: float) -> None:
        """Count one call."""
        self.calls += 1
        self.successes += success
        self.duration_sum += duration
        self.window.add(duration)

    def summary(self) -> dict[str, Any]:
        """This scope's :func:`summarize` dict."""
        return summarize(self.calls, self.successes, self.cost_micros, self.duration_sum, self.window.ordered)
