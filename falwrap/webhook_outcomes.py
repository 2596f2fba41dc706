"""Applying fal's webhook deliveries to the journal, exactly once per request id.

fal redelivers (up to 10 times over 2 hours) and several workers may receive
the same delivery, in any order. A verified delivery settles its job in the
journal the way a fetched result would: the payload stored, the cost recorded
(counted from the output; fal's billable units, which only the result answer
carries, are read by reconciliation, which corrects it), the job's one call
record written. Whoever settles the job first gets ``new``; everyone else gets
``duplicate``; a delivery for a job this store never journaled is ``unknown``.

A fast job's delivery can beat fal's answer to the submission it came from: the
job is journaled, but its request id is not written yet. While some job with a
webhook is still being submitted (opened within :data:`SUBMITTING_WINDOW`,
no request id yet), an unknown request id is ``pending``: the endpoint answers
503 and fal delivers again (up to 10 times over 2 hours), by when the id is
known. A truly foreign request id is still ``unknown`` once no submission is in
flight, so fal stops retrying it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import attrs

from falwrap.accounting import settled_record
from falwrap.catalog import ModelInfo
from falwrap.journal import JobEntry, JobState, Journal, Settlement

if TYPE_CHECKING:
    from falwrap.webhooks import WebhookEvent

__all__ = ["SUBMITTING_WINDOW", "JobOutcome", "apply_delivery"]

#: How long after its intent a job with a webhook may still be waiting for fal's answer to its
#: submission (a submission's exchanges are bounded well within this, retries included).
SUBMITTING_WINDOW = timedelta(minutes=5)


@attrs.frozen
class JobOutcome:
    """What :meth:`falwrap.FalClient.handle_webhook` did with one verified delivery.

    Args:
        request_id: fal's request id.
        status: ``"new"`` (this delivery settled the job), ``"duplicate"`` (it was settled
            before: a redelivery, or another worker got there first), ``"pending"`` (no job
            has that request id yet, but a job with a webhook is still being submitted: ask
            fal to deliver again) or ``"unknown"`` (no job of this store has that request id).
        state: The job's state in the journal after the delivery (``None`` when unknown).
        job_id: The journal's id of the job (``None`` when unknown).
        result: The job's output when it succeeded.
        error_code: Why it failed, when it did.
        cost_usd: What the job is charged now (``None`` when unknown).
        event: The verified delivery.
    """

    request_id: str
    status: Literal["new", "duplicate", "pending", "unknown"]
    state: JobState | None = None
    job_id: str | None = None
    result: Any = attrs.field(default=None, repr=False)
    error_code: str | None = None
    cost_usd: Decimal | None = None
    event: Any = attrs.field(default=None, repr=False, eq=False)

    @property
    def new(self) -> bool:
        """True for the one delivery that settled the job (send your "job finished" signal then)."""
        return self.status == "new"


def _settlement(
    event: WebhookEvent, entry: JobEntry, cost: Callable[..., Decimal], info: ModelInfo | None
) -> Settlement:
    if event.ok and isinstance(event.payload, dict):
        charged = cost(info, None, event.payload, dict(entry.arguments))
        return Settlement(JobState.SUCCEEDED, cost=charged, result=event.payload)
    detail = event.payload if isinstance(event.payload, dict) else {}
    cancelled = "499" in (event.error or "") or "cancel" in str(detail.get("detail", "")).lower()
    code = "client_cancelled" if cancelled else _error_type(detail) or "MODEL_ERROR"
    message = f"The job (request {event.request_id}) failed at fal: {event.error or code}."
    # fal's billable units come with the result answer only: keep the estimate until reconciliation reads it.
    return Settlement(JobState.CANCELLED if cancelled else JobState.FAILED, error_code=code, error_message=message)


def _error_type(detail: dict[str, Any]) -> str | None:
    items = detail.get("detail")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        kind = items[0].get("type")
        return str(kind) if kind else None
    kind = detail.get("error_type")
    return str(kind) if kind else None


def apply_delivery(
    journal: Journal,
    event: WebhookEvent,
    *,
    now: datetime,
    model_info: Callable[[str], ModelInfo | None],
    cost: Callable[..., Decimal],
) -> JobOutcome:
    """Settle the job ``event`` reports, once; see the module docstring."""
    entry = journal.find(event.request_id)
    if entry is None:
        status: Literal["pending", "unknown"] = "pending" if _submitting_with_webhook(journal, now) else "unknown"
        return JobOutcome(event.request_id, status, event=event)
    if not entry.done:
        settlement = _settlement(event, entry, cost, model_info(entry.endpoint))
        record = settled_record(entry, settlement, now)
        settled = journal.finish(entry.job_id, settlement=settlement, record=record, now=now)
    else:
        settled = False
    after = journal.get(entry.job_id) or entry
    return JobOutcome(
        request_id=event.request_id,
        status="new" if settled else "duplicate",
        state=after.state,
        job_id=after.job_id,
        result=dict(after.result) if after.result is not None else None,
        error_code=after.error_code,
        cost_usd=after.cost if after.charged else Decimal(0),
        event=event,
    )


def _submitting_with_webhook(journal: Journal, now: datetime) -> bool:
    """Whether a job with a webhook was opened lately and has no request id yet."""
    return any(
        entry.webhook_url is not None and entry.state is JobState.SUBMITTING
        for entry in journal.jobs(since=now - SUBMITTING_WINDOW)
    )
