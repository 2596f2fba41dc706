"""What the job runner takes and gives back: the job to run, fal's request options, the
output, the listener told about a submission, and the failure of a job that ran.

Plain values (and one protocol), so the runner, the call steps and reconciliation
share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from falwrap.journal import Accepted

if TYPE_CHECKING:
    from falwrap.errors import FalApiError
    from falwrap.results import Progress

__all__ = ["JobFailed", "JobSpec", "Output", "RequestOptions", "SubmitListener", "queue_urls"]

#: fal's queue host; the runner builds URLs on it only for a request found in the platform list.
QUEUE_URL = "https://queue.fal.run"


@attrs.frozen
class RequestOptions:
    """fal's per-request options, sent with a submission.

    Args:
        webhook_url: fal POSTs the outcome here when the job ends.
        priority: ``"normal"`` or ``"low"`` (batch work that may wait).
        start_timeout: Seconds fal may keep the job queued before dropping it (> 1); ``None``:
            the time left before the call's deadline.
        server_retries: Let fal retry a failed runner itself (``False`` sends ``x-fal-no-retry``).
        fallbacks: Let fal reroute to a fallback endpoint (``False`` sends ``x-fal-disable-fallbacks``).
        object_lifecycle: Seconds fal keeps generated files (privacy), when set.
        store_io: ``False`` asks fal not to store the request's input and output payloads.
    """

    webhook_url: str | None = None
    priority: str | None = None
    start_timeout: float | None = None
    server_retries: bool = True
    fallbacks: bool = True
    object_lifecycle: int | None = None
    store_io: bool | None = None

    def headers(self) -> dict[str, str]:
        """The request headers these options add (``start_timeout`` and priority go through fal_client)."""
        headers: dict[str, str] = {}
        if not self.server_retries:
            headers["x-fal-no-retry"] = "1"
        if not self.fallbacks:
            headers["x-fal-disable-fallbacks"] = "true"
        if self.object_lifecycle is not None:
            headers["X-Fal-Object-Lifecycle-Preference"] = f'{{"expiration_duration_seconds": {self.object_lifecycle}}}'
        if self.store_io is False:
            headers["X-Fal-Store-IO"] = "0"
        return headers


@attrs.frozen
class JobSpec:
    """One job to run.

    Args:
        endpoint: The fal endpoint.
        arguments: Its JSON input.
        deadline: Runner-clock time by which the job must be done (or cancelled).
        timeout: The deadline as the caller gave it, in seconds (for messages).
        started: Runner-clock time the call started (for progress events).
        options: fal's request options.
        on_progress: Told about every status change.
    """

    endpoint: str
    arguments: Mapping[str, Any] = attrs.field(repr=False)
    deadline: float
    timeout: float
    started: float
    options: RequestOptions = RequestOptions()
    on_progress: Callable[[Progress], None] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Output:
    """A finished job's output.

    Args:
        data: The model's JSON output.
        request_id: fal's request id.
        billable_units: ``x-fal-billable-units``, when fal sent it.
    """

    data: dict[str, Any] = attrs.field(repr=False)
    request_id: str
    billable_units: Decimal | None = None


class SubmitListener(Protocol):
    """Told what happens to a submission, so the caller can journal it before anything else."""

    def accepted(self, accepted: Accepted, *, found: bool = False) -> None:
        """fal accepted the job: its answer said so, or (``found``) fal's request list showed it.

        Raises:
            RequestTaken: ``found``, and another journaled job already owns that request.
        """

    def ambiguous(self) -> None:
        """The submission may have reached fal; no answer came back."""

    def never_arrived(self) -> None:
        """fal's request list shows the ambiguous submission never arrived (nothing runs at fal for it)."""

    def known(self, request_id: str) -> bool:
        """Whether ``request_id`` already belongs to another journaled job (never adopt it twice)."""


class JobFailed(Exception):
    """The job ran and failed.

    Attributes:
        error: Its typed error.
        billable_units: What fal billed for it, per its error answer.
        billed_known: Whether the job's own error answer was read (so ``billable_units``, even
            ``None``, is fal's word); ``False`` when only its status could be read.
    """

    def __init__(self, error: FalApiError, billable_units: Decimal | None, *, billed_known: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.billable_units = billable_units
        self.billed_known = billed_known


def queue_urls(endpoint: str, request_id: str) -> Accepted:
    """The queue URLs of ``request_id`` (status, result and cancel drop the endpoint's sub-path)."""
    app = "/".join(endpoint.split("/")[:2])
    base = f"{QUEUE_URL}/{app}/requests/{request_id}"
    return Accepted(request_id, f"{base}/status", base, f"{base}/cancel")
