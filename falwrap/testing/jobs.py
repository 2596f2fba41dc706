"""The emulated queue: job lifecycle, account-wide concurrency, queue positions and logs.

Time advances lazily: every operation first replays, in time order, the
events (a run finishing, a start timeout expiring) that fell due since the
last call, under one lock.  There is no scheduler thread, a job's timestamps
are exact, and queued jobs start the instant a slot frees up.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, Protocol

import attrs

from falwrap.testing.models import FakeModel, JobFailure

__all__ = ["CANCELLED", "Job", "JobBoard", "JobObserver", "JobView"]

State = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
Outcome = Literal["ok", "failed", "cancelled"]

#: What a cancelled job reports (FAL_PROTOCOL.md, "Cancel").
CANCELLED = JobFailure("client_cancelled", status=499, detail="Request cancelled by the client.")

#: Log lines a running job emits, at these fractions of its run time.
_LOG_SCRIPT: tuple[tuple[float, str], ...] = (
    (0.0, "Starting {model} (request {request_id})"),
    (0.25, "Generating: 25%"),
    (0.5, "Generating: 50%"),
    (0.75, "Generating: 75%"),
)


@attrs.define(eq=False)
class Job:
    """A job's mutable server-side state; only touched under ``JobBoard``'s lock."""

    request_id: str
    model: FakeModel
    endpoint_id: str
    arguments: Mapping[str, Any]
    submitted_at: float
    latency_s: float
    failure: JobFailure | None = None
    start_deadline: float | None = None
    webhook_url: str | None = None
    state: State = "IN_QUEUE"
    started_at: float | None = None
    completed_at: float | None = None
    outcome: Outcome | None = None
    output: dict[str, Any] | None = None
    billable_units: Decimal | None = None

    @property
    def error(self) -> JobFailure | None:
        """The failure the job completed with, or None (also while it runs).

        Returns:
            A JobFailure for failed and cancelled jobs.
        """
        return self.failure if self.outcome in ("failed", "cancelled") else None


@attrs.frozen
class JobView:
    """A read-only snapshot of one job, for tests.

    Attributes:
        request_id: the job's id.
        model_id: the endpoint id it was submitted to (including any sub-path).
        arguments: its input (read-only).
        state: ``IN_QUEUE``, ``IN_PROGRESS`` or ``COMPLETED`` when the view was taken.
        outcome: ``ok``, ``failed``, ``cancelled`` or None while not completed.
        error_type: fal's error type for failed and cancelled jobs.
        submitted_at: monotonic time the submit was accepted.
        started_at: monotonic time it went IN_PROGRESS, if it did.
        completed_at: monotonic time it completed, if it did.
        billable_units: units billed (successful jobs only).
        webhook_url: the ``fal_webhook`` it was submitted with (called when the job ends).
    """

    request_id: str
    model_id: str
    arguments: Mapping[str, Any]
    state: State
    outcome: Outcome | None
    error_type: str | None
    submitted_at: float
    started_at: float | None
    completed_at: float | None
    billable_units: Decimal | None
    webhook_url: str | None


CompletionHook = Callable[[Job], None]


class JobObserver(Protocol):
    """Told when jobs are accepted and when they end; called under the board's lock, so it must be quick."""

    def job_accepted(self, job: Job) -> None:
        """A job was accepted (it is IN_QUEUE or IN_PROGRESS)."""

    def job_ended(self, job: Job) -> None:
        """A job ended: it ran, failed, timed out waiting or was cancelled (``outcome`` is set)."""


@attrs.define
class JobBoard:
    """Account-wide queue with at most ``concurrency`` jobs IN_PROGRESS. Thread-safe.

    Args:
        concurrency: jobs that may run at once; the rest wait IN_QUEUE in FIFO order.
        on_complete: called under the lock when a job finishes *running* (not for
            cancellations or start timeouts); may set ``output``, ``failure`` and
            ``billable_units``. Must be quick and must not call back into the board.
        clock: monotonic clock.
        observer: told of every accepted and every ended job (set before serving).
    """

    concurrency: int = attrs.field(validator=attrs.validators.ge(1))
    on_complete: CompletionHook
    clock: Callable[[], float] = time.monotonic
    observer: JobObserver | None = None
    cond: threading.Condition = attrs.field(factory=threading.Condition, init=False, repr=False)
    closed: bool = attrs.field(default=False, init=False)
    _jobs: dict[str, Job] = attrs.field(factory=dict, init=False)
    _queue: deque[Job] = attrs.field(factory=deque, init=False)
    _running: set[Job] = attrs.field(factory=set, init=False)
    _events: list[tuple[float, int, str, Job]] = attrs.field(factory=list, init=False)
    _seq: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _in_flight: int = attrs.field(default=0, init=False)
    max_in_flight: int = attrs.field(default=0, init=False)
    accepted: int = attrs.field(default=0, init=False)

    # -- time ---------------------------------------------------------------

    def advance_locked(self, now: float) -> None:
        """Replay every event due at or before ``now``; the caller holds ``cond``.

        Args:
            now: the current monotonic time.
        """
        changed = False
        while self._events and self._events[0][0] <= now:
            when, _, kind, job = heapq.heappop(self._events)
            if kind == "finish" and job.state == "IN_PROGRESS" and job.completed_at is None:
                job.completed_at = when
                self.on_complete(job)
                job.outcome = "failed" if job.failure is not None else "ok"
                self._finish(job, when)
                changed = True
            elif kind == "expire" and job.state == "IN_QUEUE":
                self._queue.remove(job)
                job.failure = JobFailure(
                    "request_timeout",
                    status=504,
                    detail="Request timed out",
                    headers={"X-Fal-Request-Timeout-Type": "user"},
                )
                job.outcome = "failed"
                job.completed_at = when
                self._finish(job, when)
                changed = True
        if changed:
            self.cond.notify_all()

    def next_event_at(self) -> float | None:
        """When the next state change is due; the caller holds ``cond``.

        Returns:
            A monotonic time, or None when nothing is pending.
        """
        return self._events[0][0] if self._events else None

    def _push(self, when: float, kind: str, job: Job) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, job))

    def _start(self, job: Job, when: float) -> None:
        job.state = "IN_PROGRESS"
        job.started_at = when
        self._running.add(job)
        self._push(when + job.latency_s, "finish", job)

    def _finish(self, job: Job, when: float) -> None:
        job.state = "COMPLETED"
        self._running.discard(job)
        self._in_flight -= 1
        self._promote(when)
        if self.observer is not None:
            self.observer.job_ended(job)

    def _promote(self, when: float) -> None:
        while len(self._running) < self.concurrency and self._queue:
            self._start(self._queue.popleft(), when)

    # -- operations ---------------------------------------------------------

    def submit(self, job: Job, max_queue_length: int | None = None) -> int | None:
        """Enqueue a job, starting it at once when a slot is free.

        Args:
            job: a new job (state IN_QUEUE).
            max_queue_length: refuse the job when this many jobs of its model already wait.

        Returns:
            The job's queue position at submission, or None when refused.
        """
        with self.cond:
            now = job.submitted_at
            self.advance_locked(now)
            if max_queue_length is not None:
                waiting = sum(1 for queued in self._queue if queued.model.id == job.model.id)
                if waiting >= max_queue_length:
                    return None
            self._jobs[job.request_id] = job
            self._queue.append(job)
            self._in_flight += 1
            self.accepted += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            position = len(self._queue) - 1
            if self.observer is not None:
                self.observer.job_accepted(job)
            self._promote(now)
            if job.state == "IN_QUEUE" and job.start_deadline is not None:
                self._push(job.start_deadline, "expire", job)
            self.cond.notify_all()
            return 0 if job.state != "IN_QUEUE" else position

    def get(self, request_id: str) -> Job | None:
        """The job with this id, after bringing the board up to date.

        Args:
            request_id: the id.

        Returns:
            The job (read it under ``cond``), or None.
        """
        with self.cond:
            self.advance_locked(self.clock())
            return self._jobs.get(request_id)

    def cancel(self, request_id: str) -> Literal["requested", "completed", "missing"]:
        """Cancel a job: a queued one is removed, a running one stopped.

        Args:
            request_id: the id.

        Returns:
            ``"requested"`` when cancelled, ``"completed"`` when it had already
            finished, ``"missing"`` for an unknown id.
        """
        with self.cond:
            now = self.clock()
            self.advance_locked(now)
            job = self._jobs.get(request_id)
            if job is None:
                return "missing"
            if job.state == "COMPLETED":
                return "completed"
            if job.state == "IN_QUEUE":
                self._queue.remove(job)
            job.failure = CANCELLED
            job.outcome = "cancelled"
            job.completed_at = now
            self._finish(job, now)
            self.cond.notify_all()
            return "requested"

    def queue_position(self, job: Job) -> int:
        """Jobs ahead of ``job`` in the queue; the caller holds ``cond``.

        Args:
            job: a queued job.

        Returns:
            Its 0-based position.
        """
        return self._queue.index(job)

    @property
    def in_flight(self) -> int:
        """Jobs accepted and not yet completed or cancelled.

        Returns:
            The count now.
        """
        with self.cond:
            self.advance_locked(self.clock())
            return self._in_flight

    def reset_stats(self) -> None:
        """Zero ``accepted`` and restart ``max_in_flight`` from the current in-flight count."""
        with self.cond:
            self.advance_locked(self.clock())
            self.accepted = 0
            self.max_in_flight = self._in_flight

    def views(self) -> dict[str, JobView]:
        """Snapshots of every job ever accepted.

        Returns:
            request_id -> JobView, in submission order.
        """
        with self.cond:
            self.advance_locked(self.clock())
            return {rid: view_of(job) for rid, job in self._jobs.items()}

    def close(self) -> None:
        """Wake every waiter (status streams) so that they end."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def reopen(self) -> None:
        """Let status streams run again after ``close()`` (a restarted server)."""
        with self.cond:
            self.closed = False


def view_of(job: Job) -> JobView:
    """A frozen snapshot of ``job``; the caller holds the board's lock.

    Args:
        job: the job.

    Returns:
        Its JobView.
    """
    error = job.error
    return JobView(
        request_id=job.request_id,
        model_id=job.endpoint_id,
        arguments=MappingProxyType(copy.deepcopy(dict(job.arguments))),
        state=job.state,
        outcome=job.outcome,
        error_type=error.error_type if error is not None else None,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        billable_units=job.billable_units,
        webhook_url=job.webhook_url,
    )


@attrs.frozen
class WallClock:
    """Converts the board's monotonic times to ISO-8601 UTC timestamps for log lines."""

    mono0: float = attrs.field(factory=time.monotonic)
    wall0: float = attrs.field(factory=time.time)

    def iso(self, mono: float) -> str:
        """ISO-8601 UTC time for a monotonic instant.

        Args:
            mono: a ``time.monotonic()`` value.

        Returns:
            e.g. ``"2025-01-01T12:00:00.123456+00:00"``.
        """
        return datetime.fromtimestamp(self.wall0 + (mono - self.mono0), tz=timezone.utc).isoformat()


def logs_of(job: Job, now: float, clock: WallClock) -> list[dict[str, Any]]:
    """The log lines ``job`` has emitted by ``now``; the caller holds the board's lock.

    Args:
        job: the job.
        now: monotonic time.
        clock: converts times for the ``timestamp`` field.

    Returns:
        ``[{message, level, source, timestamp}]``, oldest first.
    """
    if job.started_at is None:
        return []
    until = now if job.completed_at is None else min(now, job.completed_at)
    lines = []
    for fraction, template in _LOG_SCRIPT:
        at = job.started_at + fraction * job.latency_s
        if at > until:
            break
        message = template.format(model=job.model.id, request_id=job.request_id)
        lines.append({"message": message, "level": "INFO", "source": "USER", "timestamp": clock.iso(at)})
    if job.completed_at is not None and job.completed_at <= now:
        error = job.error
        if error is None:
            lines.append(
                {"message": "Done", "level": "INFO", "source": "USER", "timestamp": clock.iso(job.completed_at)}
            )
        elif job.outcome == "failed":
            lines.append(
                {"message": error.message, "level": "ERROR", "source": "USER", "timestamp": clock.iso(job.completed_at)}
            )
    return lines


def next_log_at(job: Job, now: float) -> float | None:
    """When ``job`` emits its next scripted log line after ``now``.

    Args:
        job: a running job.
        now: monotonic time.

    Returns:
        A monotonic time, or None when no more lines are scripted before completion.
    """
    if job.started_at is None or job.completed_at is not None:
        return None
    for fraction, _ in _LOG_SCRIPT:
        at = job.started_at + fraction * job.latency_s
        if at > now:
            return at
    return None
