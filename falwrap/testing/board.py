"""The emulated queue: job lifecycle, account-wide concurrency, priorities and fal's own retries.

Time advances lazily: every operation first replays, in time order, the
events (a run finishing, a start timeout expiring) that fell due since the
last call, under one lock.  There is no scheduler thread, a job's timestamps
are exact, and queued jobs start the instant a runner frees up.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

import attrs

from falwrap.testing.behaviour import Behaviour
from falwrap.testing.jobs import CANCELLED, START_TIMEOUT, Job, JobView, view_of

__all__ = ["CompletionHook", "JobBoard", "JobObserver"]

#: Called under the board's lock when a runner finishes a job's last attempt.
CompletionHook = Callable[[Job], None]


class JobObserver(Protocol):
    """Told when jobs are accepted and when they end; called under the board's lock, so it must be quick."""

    def job_accepted(self, job: Job) -> None:
        """A job was accepted (it is IN_QUEUE or IN_PROGRESS)."""

    def job_ended(self, job: Job) -> None:
        """A job ended: it ran, failed, timed out waiting or was cancelled (``outcome`` is set)."""


_EventKind = Literal["finish", "expire"]


@attrs.define
class JobBoard:
    """Account-wide queue with at most ``concurrency`` runners busy. Thread-safe.

    Queued jobs start in order, every ``normal`` job before any ``low`` one.  A
    runner failure fal's queue retries (``JobFailure.retried_by_queue``) puts the
    job back at the head of its queue with a new gateway request id, up to
    ``Behaviour.server_retries`` times, moving it to the model's fallback endpoint
    after ``Behaviour.fallback_after`` of them.

    Args:
        concurrency: runners busy at once; the rest of the jobs wait IN_QUEUE.
        on_complete: called under the lock when a runner finishes a job's last
            attempt (success, failure, or a cancelled job whose model ran on); may set
            ``output``, ``failure``, ``billable_units``, ``bill`` and ``result_bytes``.
            Must be quick and must not call back into the board.
        clock: monotonic clock.
        behaviour: returns the emulator's current behaviour.
        observer: told of every accepted and every ended job (set before serving).
    """

    concurrency: int = attrs.field(validator=attrs.validators.ge(1))
    on_complete: CompletionHook
    clock: Callable[[], float] = time.monotonic
    behaviour: Callable[[], Behaviour] = Behaviour
    observer: JobObserver | None = None
    cond: threading.Condition = attrs.field(factory=threading.Condition, init=False, repr=False)
    closed: bool = attrs.field(default=False, init=False)
    _jobs: dict[str, Job] = attrs.field(factory=dict, init=False)
    _queues: dict[str, deque[Job]] = attrs.field(factory=lambda: {"normal": deque(), "low": deque()}, init=False)
    _running: set[Job] = attrs.field(factory=set, init=False)
    _events: list[tuple[float, int, _EventKind, Job, int]] = attrs.field(factory=list, init=False)
    _seq: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _job_seq: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _in_flight: int = attrs.field(default=0, init=False)
    max_in_flight: int = attrs.field(default=0, init=False)
    accepted: int = attrs.field(default=0, init=False)
    server_retries: int = attrs.field(default=0, init=False)
    fallbacks: int = attrs.field(default=0, init=False)

    # -- time ---------------------------------------------------------------

    def advance_locked(self, now: float) -> None:
        """Replay every event due at or before ``now``; the caller holds ``cond``.

        Args:
            now: the current monotonic time.
        """
        changed = False
        while self._events and self._events[0][0] <= now:
            when, _, kind, job, attempt = heapq.heappop(self._events)
            if kind == "finish" and job in self._running and job.attempt == attempt:
                self._runner_done(job, when)
                changed = True
            elif kind == "expire" and job.state == "IN_QUEUE":
                self._queues[job.options.priority].remove(job)
                self._expire(job, when)
                self._promote(when)
                changed = True
        if changed:
            self.cond.notify_all()

    def next_event_at(self) -> float | None:
        """When the next state change is due; the caller holds ``cond``.

        Returns:
            A monotonic time, or None when nothing is pending.
        """
        return self._events[0][0] if self._events else None

    def _push(self, when: float, kind: _EventKind, job: Job) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, job, job.attempt))

    # -- transitions --------------------------------------------------------

    def _start(self, job: Job, when: float) -> None:
        job.state = "IN_PROGRESS"
        job.started_at = when
        job.attempt += 1
        if job.attempt > 1:
            job.gateway_request_id = str(uuid.uuid4())
        self._running.add(job)
        self._push(when + job.latency_s, "finish", job)

    def _attempt_failed(self, job: Job) -> bool:
        # A scripted failure is the model's own runners failing; a fallback endpoint's runner works.
        plan = job.plan
        if plan is None or job.served_by != job.model.id:
            return False
        return plan.attempts is None or job.attempt <= plan.attempts

    def _may_retry(self, job: Job) -> bool:
        plan = job.plan
        return (
            plan is not None
            and plan.retried_by_queue
            and not job.sync
            and not job.options.no_retry
            and job.attempt <= self.behaviour().server_retries
        )

    def _runner_done(self, job: Job, when: float) -> None:
        self._running.discard(job)
        if job.outcome == "cancelled":
            # The model ignored the cancel signal: it ran to the end and fal bills it.
            job.runner_ended_at = when
            self.on_complete(job)
        elif self._attempt_failed(job) and self._may_retry(job):
            self._requeue(job, when)
        else:
            job.completed_at = job.runner_ended_at = when
            job.failure = job.plan if self._attempt_failed(job) else None
            self.on_complete(job)
            job.outcome = "failed" if job.failure is not None else "ok"
            self._finish(job, when)
        self._promote(when)

    def _requeue(self, job: Job, when: float) -> None:
        behaviour = self.behaviour()
        self.server_retries += 1
        fallback = job.model.fallback
        if fallback and job.options.fallbacks and job.served_by != fallback and job.attempt > behaviour.fallback_after:
            job.served_by = fallback
            self.fallbacks += 1
        job.state = "IN_QUEUE"
        job.started_at = None
        deadline = job.start_deadline
        if deadline is not None and when >= deadline:
            self._expire(job, when)
            return
        self._queues[job.options.priority].appendleft(job)
        if deadline is not None:
            self._push(deadline, "expire", job)

    def _expire(self, job: Job, when: float) -> None:
        job.failure = START_TIMEOUT
        job.outcome = "failed"
        job.completed_at = when
        self._finish(job, when)

    def _finish(self, job: Job, when: float) -> None:
        """The job is COMPLETED for its caller (its runner may still be busy after an ignored cancel)."""
        job.state = "COMPLETED"
        self._in_flight -= 1
        retention = self.behaviour().retention
        if retention is not None:
            kept = retention.seconds_for(job.result_bytes, job.options.store_io)
            job.expires_at = when + self.behaviour().real_seconds(kept)
        if self.observer is not None:
            self.observer.job_ended(job)

    def _promote(self, when: float) -> None:
        while len(self._running) < self.concurrency:
            queue = self._queues["normal"] or self._queues["low"]
            if not queue:
                return
            self._start(queue.popleft(), when)

    def _waiting(self) -> Iterator[Job]:
        yield from self._queues["normal"]
        yield from self._queues["low"]

    def _register(self, job: Job) -> None:
        job.seq = next(self._job_seq)
        self._jobs[job.request_id] = job
        self._in_flight += 1
        self.accepted += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if self.observer is not None:
            self.observer.job_accepted(job)

    # -- operations ---------------------------------------------------------

    def submit(self, job: Job, max_queue_length: int | None = None) -> int | None:
        """Enqueue a job, starting it at once when a runner is free.

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
                waiting = sum(1 for queued in self._waiting() if queued.model.id == job.model.id)
                if waiting >= max_queue_length:
                    return None
            self._register(job)
            self._queues[job.options.priority].append(job)
            self._promote(now)
            position = self.queue_position(job) if job.state == "IN_QUEUE" else 0
            deadline = job.start_deadline
            if job.state == "IN_QUEUE" and deadline is not None:
                self._push(deadline, "expire", job)
            self.cond.notify_all()
            return position

    def run_now(self, job: Job) -> bool:
        """Start a ``fal.run`` job on a free runner; sync calls never wait in the queue.

        Args:
            job: a new job with ``sync=True``.

        Returns:
            False (and nothing registered) when every runner is busy.
        """
        with self.cond:
            now = job.submitted_at
            self.advance_locked(now)
            if len(self._running) >= self.concurrency:
                return False
            self._register(job)
            self._start(job, now)
            self.cond.notify_all()
            return True

    def wait_for(self, job: Job, settled: Callable[[Job], bool]) -> bool:
        """Block until ``settled(job)`` holds (checked under the lock as time advances).

        Args:
            job: a registered job.
            settled: the condition.

        Returns:
            False when the board closed first.
        """
        with self.cond:
            while True:
                now = self.clock()
                self.advance_locked(now)
                if settled(job):
                    return True
                if self.closed:
                    return False
                due = self.next_event_at()
                self.cond.wait(max(0.001, due - now) if due is not None else 0.5)

    def wait_completed(self, job: Job) -> bool:
        """Block until ``job`` is COMPLETED.

        Args:
            job: a registered job.

        Returns:
            False when the board closed first.
        """
        return self.wait_for(job, lambda j: j.state == "COMPLETED")

    def attempt_fails(self, job: Job) -> bool:
        """Whether the runner now on ``job`` fails it; the caller holds ``cond``.

        Args:
            job: a job IN_PROGRESS.

        Returns:
            True when its current attempt ends in its scripted failure.
        """
        return self._attempt_failed(job)

    def on_final_attempt(self, job: Job) -> bool:
        """Whether ``job`` is COMPLETED or running an attempt the queue will not retry; the caller holds ``cond``.

        Args:
            job: a registered job.

        Returns:
            True once the job's fate is its current runner's.
        """
        if job.state == "COMPLETED":
            return True
        return job.state == "IN_PROGRESS" and not (self._attempt_failed(job) and self._may_retry(job))

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

    def jobs_locked(self) -> list[Job]:
        """Every job ever accepted, oldest first; the caller holds ``cond``.

        Returns:
            The jobs (read them under ``cond``).
        """
        return list(self._jobs.values())

    def cancel(self, request_id: str) -> Literal["requested", "completed", "missing"]:
        """Cancel a job: a queued one is removed, a running one signalled.

        A running job whose ``cancel_mode`` is ``"ignored"`` reads cancelled at
        once but keeps its runner until the run ends (and is then billed).

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
                self._queues[job.options.priority].remove(job)
            elif job.cancel_mode == "honoured":
                self._running.discard(job)
                job.runner_ended_at = now
            job.failure = CANCELLED
            job.outcome = "cancelled"
            job.completed_at = now
            self._finish(job, now)
            self._promote(now)
            self.cond.notify_all()
            return "requested"

    def queue_position(self, job: Job) -> int:
        """Jobs ahead of ``job`` in the queue; the caller holds ``cond``.

        Args:
            job: a queued job.

        Returns:
            Its 0-based position (low-priority jobs come after every normal one).
        """
        ahead = len(self._queues["normal"]) if job.options.priority == "low" else 0
        return ahead + self._queues[job.options.priority].index(job)

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
        """Zero ``accepted``, ``server_retries`` and ``fallbacks``; restart ``max_in_flight`` from now."""
        with self.cond:
            self.advance_locked(self.clock())
            self.accepted = self.server_retries = self.fallbacks = 0
            self.max_in_flight = self._in_flight

    def views(self) -> dict[str, JobView]:
        """Snapshots of every job ever accepted.

        Returns:
            request_id -> JobView, in submission order.
        """
        with self.cond:
            now = self.clock()
            self.advance_locked(now)
            return {rid: view_of(job, now) for rid, job in self._jobs.items()}

    def close(self) -> None:
        """Wake every waiter (status streams, sync calls) so that they end."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def reopen(self) -> None:
        """Let status streams run again after ``close()`` (a restarted server)."""
        with self.cond:
            self.closed = False
