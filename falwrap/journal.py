"""The journal: a durable record of every job falwrap sends to fal, from which money derives.

fal bills a job once it accepts it, whatever happens to the call that sent it.
So falwrap writes down what it is about to do *before* it does it, and every
view of money (daily spend, budgets, stats, results) is read from this record:

    open_job(intent)        before any submission: endpoint, arguments, estimate, owner;
                            the estimate is held against the day's budget (atomic check)
    accept(job, handle)     fal answered with a request id: the estimate now counts as spent
    mark_unknown(job)       a submission may have reached fal, no answer came: still charged
    finish(job, ...)        a terminal outcome (result payload, billable units, cost, error),
                            and/or the one call record; exactly once per job, whichever
                            process or worker gets there first

A job whose call ended without an outcome (a deadline, a failed fetch, Ctrl-C,
a killed process) stays open, charged at its estimate, until
:meth:`falwrap.FalClient.reconcile` asks fal what became of it.

Implementations live in :mod:`falwrap.backends` (memory, SQLite, PostgreSQL,
Redis) and all pass one contract suite (``tests/contract/``). Every method is
atomic and thread-safe; the shared stores are also safe across processes and
hosts. Money is ``Decimal`` rounded to the micro-dollar; times are aware UTC
datetimes; a job's "day" (what budget it counts against) is the UTC day it was
opened.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import attrs

from falwrap.money import quantize_usd
from falwrap.records import CallRecord

__all__ = [
    "CHARGED_STATES",
    "OPEN_STATES",
    "TERMINAL_STATES",
    "Accepted",
    "IdempotencyConflict",
    "JobEntry",
    "JobIntent",
    "JobState",
    "Journal",
    "RequestTaken",
    "Settlement",
    "fingerprint",
]


class JobState(str, enum.Enum):
    """Where a journaled job stands."""

    #: The intent is journaled; the submission has not been answered yet.
    SUBMITTING = "submitting"
    #: fal accepted the job (a request id exists); it is charged at its estimate until settled.
    RUNNING = "running"
    #: A submission may have reached fal but no answer came back; charged until reconciled.
    UNKNOWN = "unknown"
    #: The job produced its result.
    SUCCEEDED = "succeeded"
    #: The job ran and failed (fal may still bill it for the GPU time it used).
    FAILED = "failed"
    #: The job was cancelled (billed when it was already running, unless fal shows otherwise).
    CANCELLED = "cancelled"
    #: Nothing reached fal (refused before acceptance, or never sent): nothing is billed.
    NOT_SENT = "not_sent"

    def __str__(self) -> str:
        return self.value


#: States a job can leave: it may still be billed differently from what the journal holds.
OPEN_STATES = frozenset({JobState.SUBMITTING, JobState.RUNNING, JobState.UNKNOWN})
#: Final states: an outcome is known.
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.NOT_SENT})
#: States whose cost counts as spent on the job's day (``SUBMITTING`` only holds its estimate).
CHARGED_STATES = frozenset(
    {JobState.RUNNING, JobState.UNKNOWN, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)


def fingerprint(endpoint: str, arguments: Mapping[str, Any]) -> str:
    """A stable hash of what a job asks fal for: its endpoint and canonical JSON arguments.

    Two calls with the same fingerprint would make the same request. Used to tell
    an idempotent retry from a reused key, and to recognise a job in fal's request list.
    """
    canonical = _CANONICAL.encode([endpoint, arguments])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# One encoder for every job: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RequestTaken(Exception):
    """A request id is already another journaled job's (journal-internal).

    Two jobs with identical inputs can both find the same request in fal's request
    list; only one may own it, or its cost would be counted twice.
    """

    def __init__(self, owner: JobEntry) -> None:
        super().__init__(owner.request_id)
        self.owner = owner


class IdempotencyConflict(Exception):
    """An idempotency key is already held by a job with other arguments (journal-internal).

    The client turns it into :class:`~falwrap.InvalidInputError` naming ``idempotency_key``.
    """

    def __init__(self, entry: JobEntry) -> None:
        super().__init__(entry.job_id)
        self.entry = entry


def _aware(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        msg = f"{attribute.name} must be an aware datetime, got {value!r}"
        raise ValueError(msg)


def _money(value: Decimal) -> Decimal:
    return quantize_usd(value, name="amount")


def _optional_money(value: Decimal | None) -> Decimal | None:
    return None if value is None else quantize_usd(value, name="amount")


@attrs.frozen
class JobIntent:
    """What a call is about to submit, journaled before anything is sent.

    Args:
        job_id: falwrap's id for this submission (unique; not fal's request id).
        endpoint: The fal endpoint, e.g. ``fal-ai/flux/dev``.
        operation: The ledger operation (``generate``, ``video``, ``upscale``...).
        arguments: The JSON input sent to fal.
        estimate: The estimated cost, held against the budget.
        owner: The process that submits it (see :func:`falwrap.backends.owner_id`);
            while its heartbeat lives, nobody else reconciles the job.
        created_at: When the intent was written (its UTC day is the job's day).
        idempotency_key: The hashed key (with the endpoint) when the caller gave one.
        key_expires_at: Until when the key binds later calls to this job.
        webhook_url: Where fal was asked to deliver the outcome.
    """

    job_id: str
    endpoint: str
    operation: str
    arguments: Mapping[str, Any] = attrs.field(repr=False)
    estimate: Decimal = attrs.field(converter=_money)
    owner: str
    created_at: datetime = attrs.field(validator=_aware)
    idempotency_key: str | None = None
    key_expires_at: datetime | None = attrs.field(default=None, validator=_aware)
    webhook_url: str | None = None

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.endpoint, self.arguments)

    @property
    def day(self) -> date:
        """The UTC day whose budget the job counts against."""
        return self.created_at.date()


@attrs.frozen
class Accepted:
    """fal's answer to a submission: the request id and where to follow it.

    Args:
        request_id: fal's queue request id.
        status_url: Where to ask for the status.
        response_url: Where to fetch the result.
        cancel_url: Where to cancel.
        gateway_request_id: The id of the last attempt when fal retried it itself.
    """

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    gateway_request_id: str | None = None


@attrs.frozen
class Settlement:
    """A job's outcome, as far as it is known, applied by :meth:`Journal.finish`.

    Args:
        state: A terminal :class:`JobState`.
        cost: What the job cost; ``None`` keeps the journal's current charge (its estimate).
        cost_final: The cost comes from fal (billable units, or fal showed the job unbilled);
            a provisional cost may be corrected later by reconciliation.
        billable_units: fal's ``x-fal-billable-units``, when it said.
        result: The model's output payload (kept so results outlive fal's retention).
        error_code: The error's code for a failed or cancelled job.
        error_message: Its friendly message.
    """

    state: JobState = attrs.field(validator=attrs.validators.in_(TERMINAL_STATES))
    cost: Decimal | None = attrs.field(default=None, converter=_optional_money)
    cost_final: bool = False
    billable_units: Decimal | None = None
    result: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    error_code: str | None = None
    error_message: str | None = None


@attrs.frozen
class JobEntry:
    """One journaled job as the store holds it (a snapshot; read-only).

    Args:
        job_id, endpoint, operation, arguments, owner, created_at, idempotency_key,
        key_expires_at, webhook_url: From the :class:`JobIntent`.
        fingerprint: Hash of endpoint and arguments.
        estimate: The estimated cost.
        state: Where the job stands.
        cost: What the job is charged now: the estimate until fal says otherwise;
            zero for ``NOT_SENT``.
        cost_final: Whether ``cost`` comes from fal.
        billable_units: fal's billable units, when known.
        request_id, status_url, response_url, cancel_url, gateway_request_id: From fal's answer.
        accepted_at: When fal's answer was journaled.
        finished_at: When the outcome was journaled; for a job still open, when the last call
            that followed it ended (nothing can have been sent for it since).
        result: The output payload of a finished job.
        error_code, error_message: Why it failed.
        recorded: Whether the call record of this job exists (there is exactly one).
    """

    job_id: str
    endpoint: str
    operation: str
    arguments: Mapping[str, Any] = attrs.field(repr=False)
    fingerprint: str = attrs.field(repr=False)
    estimate: Decimal
    owner: str | None
    created_at: datetime
    state: JobState
    cost: Decimal
    cost_final: bool = False
    billable_units: Decimal | None = None
    idempotency_key: str | None = attrs.field(default=None, repr=False)
    key_expires_at: datetime | None = None
    webhook_url: str | None = None
    request_id: str | None = None
    status_url: str | None = attrs.field(default=None, repr=False)
    response_url: str | None = attrs.field(default=None, repr=False)
    cancel_url: str | None = attrs.field(default=None, repr=False)
    gateway_request_id: str | None = None
    accepted_at: datetime | None = None
    finished_at: datetime | None = None
    result: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    error_code: str | None = None
    error_message: str | None = attrs.field(default=None, repr=False)
    recorded: bool = False

    @property
    def day(self) -> date:
        """The UTC day whose budget the job counts against."""
        return self.created_at.date()

    @classmethod
    def opened(cls, intent: JobIntent) -> JobEntry:
        """The entry of a job just journaled from ``intent``: submitting, charged its estimate."""
        return cls(
            job_id=intent.job_id,
            endpoint=intent.endpoint,
            operation=intent.operation,
            arguments=intent.arguments,
            fingerprint=intent.fingerprint,
            estimate=intent.estimate,
            owner=intent.owner,
            created_at=intent.created_at,
            state=JobState.SUBMITTING,
            cost=intent.estimate,
            idempotency_key=intent.idempotency_key,
            key_expires_at=intent.key_expires_at,
            webhook_url=intent.webhook_url,
        )

    @property
    def done(self) -> bool:
        """True once an outcome is journaled."""
        return self.state in TERMINAL_STATES

    @property
    def charged(self) -> bool:
        """True when the job's cost counts as spent."""
        return self.state in CHARGED_STATES

    @property
    def accepted(self) -> Accepted | None:
        """fal's answer, once there was one."""
        if self.request_id is None:
            return None
        return Accepted(
            self.request_id,
            self.status_url or "",
            self.response_url or "",
            self.cancel_url or "",
            self.gateway_request_id,
        )


@runtime_checkable
class Journal(Protocol):
    """A store of jobs, budget holds and call records; see the module docstring.

    Every method is atomic and thread-safe; shared stores are safe across processes.
    Amounts are ``Decimal`` dollars; ``now`` is always an aware UTC datetime (the
    caller's clock decides days, so one clock governs a budget check and its record).
    """

    # -- jobs ---------------------------------------------------------------------------------

    def open_job(self, intent: JobIntent, *, budget: Decimal | None, now: datetime) -> tuple[JobEntry, bool]:
        """Journal ``intent`` before it is sent, holding its estimate against ``budget``.

        With ``intent.idempotency_key`` already held by an unexpired job whose
        outcome is not ``NOT_SENT``: nothing is written and that job is returned.

        Returns:
            ``(entry, created)``: the new entry and ``True``, or the key's job and ``False``.

        Raises:
            BudgetExceededError: today's spend + held + the estimate would pass ``budget``;
                nothing is journaled.
            IdempotencyConflict: the key is held by a job with another fingerprint.
        """
        ...

    def accept(self, job_id: str, accepted: Accepted, *, now: datetime) -> JobEntry:
        """fal accepted the job: keep its request id and URLs; its estimate now counts as spent.

        Also valid for an ``UNKNOWN`` job whose request was found later. A job
        already terminal keeps its state (only missing ids are filled in).

        Raises:
            RequestTaken: another job already owns this request id (nothing changes).
            KeyError: no such job.
        """
        ...

    def mark_unknown(self, job_id: str, *, now: datetime) -> JobEntry:
        """A submission may have reached fal and no answer came: charge it until reconciled.

        Only a ``SUBMITTING`` job changes; others are returned as they are.
        """
        ...

    def finish(
        self,
        job_id: str,
        *,
        settlement: Settlement | None = None,
        record: CallRecord | None = None,
        now: datetime,
    ) -> bool:
        """End a call's part in a job, in one atomic step.

        * ``settlement`` on an open job: it becomes terminal with that outcome and cost.
          On a terminal job whose cost is provisional, a ``cost_final`` settlement
          corrects the cost (and fills a missing result); otherwise it is ignored.
        * ``record`` is stored unless the job already has its record (``job_id`` is set on it).
        * The owner is cleared: an open job is left for :meth:`unsettled`.

        Returns:
            ``True`` when this call moved the job from open to terminal.

        Raises:
            KeyError: no such job.
        """
        ...

    def get(self, job_id: str) -> JobEntry | None:
        """The job, or ``None``."""
        ...

    def find(self, request_id: str) -> JobEntry | None:
        """The job fal knows as ``request_id``, or ``None``."""
        ...

    def unsettled(self, *, now: datetime, provisional: bool = True) -> list[JobEntry]:
        """Jobs reconciliation should settle, oldest first.

        Open jobs whose owner is gone (detached by :meth:`finish`, or whose heartbeat
        lapsed), and with ``provisional``, terminal jobs whose cost is not final.
        """
        ...

    def jobs(self, *, since: datetime | None = None, limit: int | None = None) -> list[JobEntry]:
        """Journaled jobs opened at or after ``since``, newest first."""
        ...

    def claim(self, job_id: str, owner: str, *, now: datetime) -> bool:
        """Make ``owner`` the owner of an open job whose owner is gone (compare-and-set).

        For a later call with the same idempotency key that takes over a job whose
        process died while submitting it: only one taker wins.

        Returns:
            ``True`` when ``owner`` took the job over; ``False`` when the job is
            finished or its owner (possibly ``owner`` itself) is alive.
        """
        ...

    def heartbeat(self, owner: str, *, ttl: float, now: datetime) -> None:
        """Keep ``owner`` alive for ``ttl`` seconds: its open jobs are not someone else's to reconcile."""
        ...

    def drop_owner(self, owner: str) -> None:
        """``owner`` is going away: its open jobs become reconcilable at once."""
        ...

    # -- budget holds not tied to a job (the ledger's Reservation API) -----------------------

    def hold(
        self,
        hold_id: str,
        amount: Decimal,
        *,
        budget: Decimal | None,
        model_id: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        """Hold ``amount`` of today's budget; atomic with the check.

        Raises:
            BudgetExceededError: it does not fit; nothing is held.
        """
        ...

    def release(self, hold_id: str) -> None:
        """End a hold (no-op when it already ended or lapsed)."""
        ...

    def reserved(self, *, now: datetime) -> Decimal:
        """What open holds and jobs still submitting hold now."""
        ...

    # -- call records and their aggregates -----------------------------------------------------

    def add_record(self, rec: CallRecord, *, hold_id: str | None = None) -> None:
        """Store a call record not tied to a job; its cost counts as spent; ends ``hold_id`` atomically."""
        ...

    def daily_cost(self, day: date) -> Decimal:
        """Spend on a UTC day: charged jobs opened that day plus job-less records of that day."""
        ...

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Call counts, success rate and durations (from records) and cost (from jobs), as ``CostLedger.stats``."""
        ...

    def records(self, limit: int | None = None) -> list[CallRecord]:
        """The most recent call records, newest first."""
        ...

    def close(self) -> None:
        """Release what the store holds open (connections); idempotent."""
        ...
