"""One job's server-side state, its read-only view for tests, and the log lines it emits."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import attrs

from falwrap.testing.behaviour import CancelMode
from falwrap.testing.billing import BillingRecord, Outcome
from falwrap.testing.models import FakeModel, JobFailure
from falwrap.testing.options import RequestOptions

__all__ = [
    "CANCELLED",
    "LOG_SCRIPT",
    "START_TIMEOUT",
    "Job",
    "JobView",
    "WallClock",
    "logs_of",
    "next_log_at",
    "view_of",
]

State = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

#: What a cancelled job reports: status COMPLETED with this type, result 499.
CANCELLED = JobFailure("client_cancelled", status=499, detail="Request cancelled by the client.")

#: What a job still queued when its ``X-Fal-Request-Timeout`` runs out completes with.
START_TIMEOUT = JobFailure(
    "request_timeout", status=504, detail="Request timed out", headers={"X-Fal-Request-Timeout-Type": "user"}
)

#: Log lines a running job emits, at these fractions of its run time.
LOG_SCRIPT: tuple[tuple[float, str], ...] = (
    (0.0, "Starting {model} (request {request_id})"),
    (0.25, "Generating: 25%"),
    (0.5, "Generating: 50%"),
    (0.75, "Generating: 75%"),
)


@attrs.define(eq=False)
class Job:
    """A job's mutable server-side state; only touched under ``JobBoard``'s lock.

    ``plan`` is the failure scripted for it (its runners fail that way, see
    ``JobFailure.attempts``); ``failure`` is the failure it completed with.
    """

    request_id: str
    model: FakeModel
    endpoint_id: str
    arguments: Mapping[str, Any]
    submitted_at: float
    latency_s: float
    plan: JobFailure | None = None
    options: RequestOptions = attrs.field(factory=RequestOptions)
    webhook_url: str | None = None
    sync: bool = False
    cancel_mode: CancelMode = "honoured"
    seq: int = 0
    state: State = "IN_QUEUE"
    attempt: int = 0
    gateway_request_id: str = ""
    served_by: str = ""
    started_at: float | None = None
    completed_at: float | None = None
    runner_ended_at: float | None = None
    outcome: Outcome | None = None
    failure: JobFailure | None = None
    output: dict[str, Any] | None = None
    billable_units: Decimal | None = None
    bill: BillingRecord | None = None
    result_bytes: int = 0
    expires_at: float | None = None

    def __attrs_post_init__(self) -> None:
        self.gateway_request_id = self.gateway_request_id or self.request_id
        self.served_by = self.served_by or self.model.id

    @property
    def start_deadline(self) -> float | None:
        """When a job still queued is dropped (``X-Fal-Request-Timeout``).

        Returns:
            A monotonic time, or None without a start timeout.
        """
        timeout = self.options.start_timeout_s
        return None if timeout is None else self.submitted_at + timeout

    @property
    def error(self) -> JobFailure | None:
        """The failure the job completed with, or None (also while it runs).

        Returns:
            A JobFailure for failed and cancelled jobs.
        """
        return self.failure if self.outcome in ("failed", "cancelled") else None

    def expired(self, now: float) -> bool:
        """Whether fal has forgotten the job's result by ``now``.

        Args:
            now: monotonic time.

        Returns:
            True once the result's retention has run out.
        """
        return self.expires_at is not None and now >= self.expires_at


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
        billable_units: units billed (successful jobs, and failed or cancelled jobs fal billed).
        webhook_url: the ``fal_webhook`` it was submitted with (called when the job ends).
        attempts: runners that took the job (more than one after server-side retries).
        gateway_request_id: the id of the latest attempt (the request id for the first).
        served_by: the endpoint whose runner took the last attempt (a fallback's id
            once fal moved the job there).
        priority: ``normal`` or ``low``.
        via: ``"queue"`` for queue submissions, ``"run"`` for ``fal.run`` calls.
        result_expired: fal has forgotten the result (its retention ran out).
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
    attempts: int = 0
    gateway_request_id: str = ""
    served_by: str = ""
    priority: str = "normal"
    via: Literal["queue", "run"] = "queue"
    result_expired: bool = False


def view_of(job: Job, now: float) -> JobView:
    """A frozen snapshot of ``job``; the caller holds the board's lock.

    Args:
        job: the job.
        now: monotonic time (decides ``result_expired``).

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
        attempts=job.attempt,
        gateway_request_id=job.gateway_request_id,
        served_by=job.served_by,
        priority=job.options.priority,
        via="run" if job.sync else "queue",
        result_expired=job.expired(now),
    )


@attrs.frozen
class WallClock:
    """Converts the board's monotonic times to ISO-8601 UTC timestamps for log lines."""

    mono0: float = attrs.field(factory=time.monotonic)
    wall0: float = attrs.field(factory=time.time)

    def moment(self, mono: float) -> datetime:
        """The UTC wall-clock time of a monotonic instant.

        Args:
            mono: a ``time.monotonic()`` value.

        Returns:
            An aware datetime.
        """
        return datetime.fromtimestamp(self.wall0 + (mono - self.mono0), tz=timezone.utc)

    def iso(self, mono: float) -> str:
        """ISO-8601 UTC time for a monotonic instant.

        Args:
            mono: a ``time.monotonic()`` value.

        Returns:
            e.g. ``"2025-01-01T12:00:00.123456+00:00"``.
        """
        return self.moment(mono).isoformat()


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
    for fraction, template in LOG_SCRIPT:
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
    for fraction, _ in LOG_SCRIPT:
        at = job.started_at + fraction * job.latency_s
        if at > now:
            return at
    return None
