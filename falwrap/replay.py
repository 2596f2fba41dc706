"""Calls that meet a job already in the journal: idempotent retries.

A call with an idempotency key some earlier call already used (in any thread,
process or host sharing the store) does not submit again. It:

* returns the stored result of a finished job (no HTTP to the queue), or raises its stored error;
* follows the same request id of a job fal accepted;
* waits (within its deadline) for a live process still submitting it;
* takes over a job whose process died while submitting: asks fal's request list
  whether the submission arrived, and submits only when fal shows it did not.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from falwrap.accounting import owner_gone
from falwrap.errors import ModelError
from falwrap.job_types import JobFailed, JobSpec, Output
from falwrap.jobs import RESOLVE_WAIT, JobRunner
from falwrap.journal import JobEntry, JobState, RequestTaken
from falwrap.platform import PlatformUnavailable

if TYPE_CHECKING:
    from falwrap.accounting import Ticket
    from falwrap.reconcile import Reconciler

__all__ = ["hash_key", "replay", "stored_output"]

logger = logging.getLogger("falwrap")

#: How often a call waiting for another process's submission looks at the journal.
WAIT_POLL = 0.05


def hash_key(key: str, endpoint: str) -> str:
    """An idempotency key as the journal keeps it: hashed with the endpoint, never in clear.

    Raises:
        InvalidInputError: the key is not a non-empty string of at most 255 characters.
    """
    from falwrap.errors import InvalidInputError

    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        msg = f"idempotency_key: expected a non-empty string of at most 255 characters, got {key!r}."
        raise InvalidInputError(msg, field="idempotency_key")
    try:
        encoded = f"{endpoint}\n{key}".encode()
    except UnicodeEncodeError:
        msg = f"idempotency_key: {key!r} cannot be encoded as UTF-8."
        raise InvalidInputError(msg, field="idempotency_key") from None
    return hashlib.sha256(encoded).hexdigest()


def stored_output(entry: JobEntry) -> Output:
    """The outcome a finished journal entry holds: its output, or its error raised.

    Raises:
        ModelError: the job failed or was cancelled (its stored error).
    """
    if entry.state is JobState.SUCCEEDED and entry.result is not None:
        return Output(dict(entry.result), entry.request_id or "", entry.billable_units)
    code = entry.error_code or ("client_cancelled" if entry.state is JobState.CANCELLED else "MODEL_ERROR")
    message = entry.error_message or f"The job (request {entry.request_id}) ended {entry.state}."
    raise ModelError(message, error_code=code, request_id=entry.request_id)


def replay(
    ticket: Ticket,
    spec: JobSpec,
    runner: JobRunner,
    reconciler: Reconciler,
    *,
    resubmit: Callable[[], Output],
    follow: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Output | None:
    """The outcome of the job an idempotency key already names (see the module docstring).

    Without ``follow`` (``submit()``), it returns ``None`` as soon as the job has a
    request id (or is finished): the caller only needs the job, not its output.
    """
    journal = ticket.journal
    entry = ticket.entry
    waited_for_list = False
    claimed = False
    while True:
        fresh = journal.get(entry.job_id)
        entry = fresh if fresh is not None else entry
        ticket.entry = entry
        if not follow and (entry.done or entry.request_id is not None):
            return None
        if entry.done:
            return stored_output(entry)
        now = ticket.now()
        if entry.owner is not None and owner_gone(entry.owner):
            journal.drop_owner(entry.owner)
        orphaned = any(e.job_id == entry.job_id for e in journal.unsettled(now=now, provisional=False))
        accepted = entry.accepted
        if accepted is not None:
            try:
                return runner.complete(accepted, spec)
            except JobFailed as failure:
                ticket.job_failed(failure)
                raise failure.error from None
        # Once claimed, the job is this call's (its owner is alive): no longer orphaned, still to resolve.
        if claimed or (orphaned and journal.claim(entry.job_id, ticket.owner, now=now)):
            claimed = True
            # Its process died before fal's answer was journaled: did fal get the submission?
            try:
                found = reconciler.find_submission(entry, spec.deadline)
            except PlatformUnavailable as exc:
                raise runner.ambiguous_for_key(spec.endpoint, exc.reason) from exc
            if found is not None:
                logger.info(
                    "[falwrap] job %s: fal received its lost submission as request %s", entry.job_id, found.request_id
                )
                with contextlib.suppress(RequestTaken):
                    ticket.accepted(found, found=True)
                continue
            if not waited_for_list:
                # fal's request list lags the queue by seconds: look again once it has caught up.
                waited_for_list = True
                _pause(min(RESOLVE_WAIT, spec.deadline - clock()), sleep)
                continue
            logger.info("[falwrap] job %s: fal's request list shows no submission; submitting it", entry.job_id)
            ticket.created = True
            return resubmit()
        if clock() >= spec.deadline:
            raise runner.timeout(spec.endpoint, None, spec.timeout, cancelled=False, sent=True)
        _pause(WAIT_POLL, sleep)


def _pause(seconds: float, sleep: Callable[[float], None]) -> None:
    if seconds > 0:
        sleep(seconds)
