"""Calls that meet a job already in the journal: idempotent retries and ``result()``.

A call with an idempotency key some earlier call already used (in any thread,
process or host sharing the store) does not submit again. It:

* returns the stored result of a finished job (no HTTP to the queue), or raises its stored error;
* follows the same request id of a job fal accepted;
* waits (within its deadline) for a live process still submitting it;
* takes over a job whose process died while submitting: asks fal's request list
  whether the submission arrived, and submits only when fal shows it did not.

``result(handle)`` of a finished job likewise reads the journal, hours later and
in another process; of a running one, follows it and settles it once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from falwrap.errors import ModelError
from falwrap.jobs import RESOLVE_WAIT, JobFailed, JobRunner, JobSpec, Output
from falwrap.journal import Accepted, JobEntry, JobState
from falwrap.plan import Plan
from falwrap.platform import PlatformUnavailable
from falwrap.records import CallRecord

from falwrap.accounting import owner_gone

if TYPE_CHECKING:
    from falwrap.accounting import Ticket
    from falwrap.client import FalClient
    from falwrap.reconcile import Reconciler

__all__ = ["collect", "hash_key", "replay", "stored_output"]

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
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Output:
    """The outcome of the job an idempotency key already names (see the module docstring)."""
    journal = ticket.journal
    entry = ticket.entry
    waited_for_list = False
    while True:
        fresh = journal.get(entry.job_id)
        entry = fresh if fresh is not None else entry
        ticket.entry = entry
        if entry.done:
            return stored_output(entry)
        accepted = entry.accepted
        if accepted is not None:
            try:
                return runner.complete(accepted, spec)
            except JobFailed as failure:
                ticket.job_failed(failure)
                raise failure.error from None
        now = ticket.now()
        if entry.owner is not None and owner_gone(entry.owner):
            journal.drop_owner(entry.owner)
        orphaned = any(e.job_id == entry.job_id for e in journal.unsettled(now=now, provisional=False))
        if orphaned and journal.claim(entry.job_id, ticket.owner, now=now):
            # Its process died before fal's answer was journaled: did fal get the submission?
            try:
                found = reconciler.find_submission(entry, spec.deadline)
            except PlatformUnavailable as exc:
                raise runner.ambiguous_for_key(spec.endpoint, exc.reason) from exc
            if found is not None:
                ticket.accepted(found)
                continue
            if not waited_for_list:
                # fal's request list lags the queue by seconds: look again once it has caught up.
                waited_for_list = True
                _pause(min(RESOLVE_WAIT, spec.deadline - clock()), sleep)
                continue
            ticket.created = True
            return resubmit()
        if clock() >= spec.deadline:
            raise runner.timeout(spec.endpoint, None, spec.timeout, cancelled=False, sent=True)
        _pause(WAIT_POLL, sleep)


def _pause(seconds: float, sleep: Callable[[float], None]) -> None:
    if seconds > 0:
        sleep(seconds)


def collect(client: FalClient, handle: Any, seconds: float) -> dict[str, Any]:
    """What :meth:`FalClient.result` returns: the journal's stored outcome, or the job followed to its end."""
    accounts = client._accounts
    runner = client._runner
    journal = client.ledger.journal
    entry = journal.find(handle.request_id)
    if entry is not None and entry.done:
        return stored_output(entry).data
    now = runner.clock()
    accepted = Accepted(handle.request_id, handle.status_url, handle.response_url, handle.cancel_url)
    arguments = dict(entry.arguments) if entry is not None else {}
    spec = JobSpec(handle.model_id, arguments, now + seconds, seconds, now)
    if entry is None:
        return _collect_unjournaled(client, handle, accepted, spec)
    plan = Plan(entry.endpoint, client._model_info(entry.endpoint), arguments, entry.operation, entry.estimate, seconds)
    ticket = accounts.adopt(plan, entry)
    try:
        output = runner.complete(accepted, spec)
    except JobFailed as failure:
        ticket.job_failed(failure)
        ticket.fail(failure.error)
        raise failure.error from None
    except BaseException as exc:
        ticket.fail(exc)
        raise
    ticket.succeed(output)
    return output.data


def _collect_unjournaled(client: FalClient, handle: Any, accepted: Accepted, spec: JobSpec) -> dict[str, Any]:
    """A job this store never journaled (submitted by a process on another store): follow it, record it."""
    started = time.monotonic()
    info = client._model_info(handle.model_id)
    error: BaseException | None = None
    cost = Decimal(0)
    try:
        output = client._runner.complete(accepted, spec)
        cost = client._accounts.cost(info, output.billable_units, output.data, {})
        return output.data
    except JobFailed as failure:
        error = failure.error
        raise failure.error from None
    except BaseException as exc:
        error = exc
        raise
    finally:
        hold = client.ledger.adopt(handle.reservation_id, handle.estimate_usd) if handle.reservation_id else None
        from falwrap.accounting import error_code

        record = CallRecord(
            timestamp=client.ledger.clock(), model_id=handle.model_id, operation=handle.operation,
            duration_ms=int((time.monotonic() - started) * 1000), cost_usd=cost, success=error is None,
            error_code=None if error is None else error_code(error), request_id=handle.request_id,
        )  # fmt: skip
        client.ledger.record(record, reservation=hold)
