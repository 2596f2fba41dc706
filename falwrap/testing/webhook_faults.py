"""Scripted webhook delivery faults: duplicate, delay, reorder or drop the deliveries of the next jobs."""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

import attrs

__all__ = ["WebhookFault", "WebhookFaultQueue"]

#: Bounds that keep a scripted fault from exhausting the emulator's threads or memory.
MAX_COPIES = 100
MAX_REORDER = 1000


def _non_negative_finite(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        msg = f"{attribute.name} must be a finite number of seconds >= 0, got {value!r}"
        raise ValueError(msg)


def _reorder_size(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value != 0 and not 2 <= value <= MAX_REORDER:
        msg = f"reorder_batch must be 0 (off) or a batch of 2 to {MAX_REORDER} deliveries, got {value!r}"
        raise ValueError(msg)


@attrs.frozen
class WebhookFault:
    """How the emulator mishandles the webhook delivery of one job; build it with the class methods.

    Fields combine: ``WebhookFault(copies=2, reorder_batch=4)`` sends every delivery
    twice and releases them four at a time in reverse order.

    Attributes:
        copies: how many times the delivery is sent; each copy is signed, sent and
            retried on its own, concurrently with the others.
        delay_s: real seconds to wait after the job ends before the first attempt.
        dropped: the delivery is lost: never sent and never retried (the receiver has to
            find out by polling).
        reorder_batch: hold deliveries until this many are waiting, then send them one after
            the other, newest first (0: off).
    """

    copies: int = attrs.field(
        default=1,
        validator=[attrs.validators.instance_of(int), attrs.validators.ge(1), attrs.validators.le(MAX_COPIES)],
    )
    delay_s: float = attrs.field(default=0.0, validator=_non_negative_finite)
    dropped: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    reorder_batch: int = attrs.field(default=0, validator=[attrs.validators.instance_of(int), _reorder_size])

    @classmethod
    def duplicate(cls, copies: int = 2) -> WebhookFault:
        """Send the delivery ``copies`` times (at-least-once delivery, seen twice by the receiver).

        Args:
            copies: how many identical deliveries.

        Returns:
            The fault.
        """
        return cls(copies=copies)

    @classmethod
    def delay(cls, seconds: float) -> WebhookFault:
        """Send the delivery ``seconds`` after the job ends (real seconds, not time-scaled).

        Args:
            seconds: the delay.

        Returns:
            The fault.
        """
        return cls(delay_s=seconds)

    @classmethod
    def drop(cls) -> WebhookFault:
        """Never send the delivery, and never retry it.

        Returns:
            The fault.
        """
        return cls(dropped=True)

    @classmethod
    def reorder(cls, batch: int = 2) -> WebhookFault:
        """Hold deliveries until ``batch`` are waiting, then send them newest first.

        Args:
            batch: how many deliveries are held and reversed together (at least 2).

        Returns:
            The fault.
        """
        return cls(reorder_batch=batch)


@attrs.define
class _Entry:
    fault: WebhookFault
    remaining: int


@attrs.define
class WebhookFaultQueue:
    """FIFO of scripted webhook faults, one consumed per ended job. Thread-safe."""

    _entries: deque[_Entry] = attrs.field(factory=deque, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def add(self, fault: Any, times: int) -> None:
        """Apply ``fault`` to the deliveries of the next ``times`` jobs.

        Args:
            fault: what to do.
            times: how many jobs.

        Raises:
            ValueError: when ``times < 1``.
            TypeError: when ``fault`` is not a WebhookFault.
        """
        if not isinstance(fault, WebhookFault):
            msg = f"fault must be a WebhookFault, got {type(fault).__name__}"
            raise TypeError(msg)
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            msg = f"times must be a whole number >= 1, got {times!r}"
            raise ValueError(msg)
        with self._lock:
            self._entries.append(_Entry(fault, times))

    def take(self) -> WebhookFault | None:
        """Consume the fault for one delivery.

        Returns:
            The first queued fault, or None to deliver normally.
        """
        with self._lock:
            if not self._entries:
                return None
            entry = self._entries[0]
            entry.remaining -= 1
            if entry.remaining == 0:
                self._entries.popleft()
            return entry.fault

    def clear(self) -> None:
        """Forget every queued fault."""
        with self._lock:
            self._entries.clear()
