"""The machinery under FalClient's methods: one call's ticket, its job spec, and the submit/follow steps.

:class:`Calls` holds what every call of one client shares (runner, accountant,
limiter, reconciler) and implements the steps the facade names: open a call's
ticket, build its job spec, execute it (every submission paced, resubmitted only
when fal says a failed job may succeed again), replay a job an idempotency key
already names, and the submit/status/result/cancel steps of web apps.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from falwrap import retry as _retry
from falwrap.accounting import Accountant, Ticket
from falwrap.catalog import ModelInfo
from falwrap.config import FalConfig
from falwrap.errors import FalApiError, FalwrapError, ModelError, ServerError, error_code
from falwrap.following import DeadlinePassed
from falwrap.job_types import JobFailed, JobSpec, Output, RequestOptions
from falwrap.jobs import JobRunner
from falwrap.journal import Accepted, JobEntry, JobState, Settlement
from falwrap.limiter import LeaseKeeper, Limiter
from falwrap.limits import Slot, within_wait_bound
from falwrap.plan import Plan
from falwrap.reconcile import Reconciler
from falwrap.records import CallRecord
from falwrap.replay import hash_key, replay, stored_output
from falwrap.results import Image, ImageResult, JobHandle, JobStatus, Progress, Video, VideoResult
from falwrap.retry import RetryHook

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["Calls", "image_result", "video_result"]

ProgressCallback = Callable[[Progress], None]


class Calls:
    """The steps of one client's calls. Thread-safe.

    Args:
        config: The client's settings.
        runner: fal's queue protocol.
        accounts: Tickets, records, the journal.
        limiter: Rate and concurrency.
        reconciler: Settles jobs nobody collected (used by replays).
        hooks: Retry hooks.
        model_info: Price lookup by endpoint.
    """

    def __init__(
        self,
        config: FalConfig,
        runner: JobRunner,
        accounts: Accountant,
        limiter: Limiter,
        reconciler: Reconciler,
        hooks: tuple[RetryHook, ...],
        model_info: Callable[[str], ModelInfo | None],
    ) -> None:
        self._config = config
        self._model_info = model_info
        self._runner = runner
        self._accounts = accounts
        self._limiter = limiter
        self._reconciler = reconciler
        self._hooks = hooks
        # fal's request options from the config, built once (a frozen value); a call's webhook
        # URL makes its own copy.
        self._options = RequestOptions(
            priority=None if config.queue_priority == "normal" else "low", start_timeout=config.start_timeout,
            server_retries=config.server_retries, fallbacks=config.fallbacks,
            object_lifecycle=config.object_lifecycle,
        )  # fmt: skip
        self._leases = LeaseKeeper()
        self._lock = threading.Lock()
        # Places held for jobs sent with submit(), until seen finished here (request id -> place, since).
        self._held: dict[str, tuple[Slot, float]] = {}

    # -- a blocking call's steps ----------------------------------------------------------------

    def open(self, plan: Plan, key: str | None, webhook_url: str | None) -> Ticket:
        """Journal the call's job (budget, idempotency key); a refusal still leaves the call's record."""
        try:
            hashed = None if key is None else hash_key(key, plan.endpoint)
            return self._accounts.open(plan, key=hashed, webhook_url=webhook_url or self._config.webhook_url)
        except FalwrapError as exc:
            self._accounts.refused(plan.endpoint, plan.operation, self._runner.clock(), exc)
            raise

    def spec(self, plan: Plan, on_progress: ProgressCallback | None, webhook_url: str | None) -> JobSpec:
        """The job as the runner runs it: deadline from now, fal's request options from the config."""
        now = self._runner.clock()
        options = self._options if webhook_url is None else attrs.evolve(self._options, webhook_url=webhook_url)
        return JobSpec(plan.endpoint, plan.arguments, now + plan.timeout, plan.timeout, now, options, on_progress)

    def run(self, ticket: Ticket, spec: JobSpec) -> Output:
        """The job's output: a new job executed, or the one the idempotency key names replayed."""
        if ticket.created:
            return self.execute(ticket, spec, follow=True)
        output = replay(
            ticket, spec, self._runner, self._reconciler, resubmit=lambda: self.execute(ticket, spec, follow=True)
        )
        assert output is not None
        return output

    def execute(self, ticket: Ticket, spec: JobSpec, *, follow: bool) -> Output:
        """Submit (every attempt paced) and, with ``follow``, complete the job.

        A job is resubmitted only when fal reports it failed with an error that a new
        attempt can fix; every attempt counts against ``max_retries``. Without ``follow``
        the output is empty and the job's place is held for :meth:`result`.
        """
        tries = itertools.count(1)
        runner = self._runner

        def attempt() -> Output:
            slot = self._acquire(spec.deadline)
            try:
                self._limiter.rate.acquire(timeout=within_wait_bound(max(0.0, spec.deadline - runner.clock())))
                try:
                    accepted = runner.submit(spec, ticket, attempts=next(tries))
                except DeadlinePassed as exc:
                    sent = ticket.entry.state is JobState.UNKNOWN
                    raise runner.timeout(spec.endpoint, None, spec.timeout, cancelled=False, sent=sent) from exc
                if not follow:
                    self._hold(accepted.request_id, slot)
                    slot = None
                    return Output({}, accepted.request_id)
                try:
                    return runner.complete(accepted, spec)
                except JobFailed as failure:
                    ticket.job_failed(failure)
                    raise
            finally:
                self._release(slot)

        def out_of_time(_error: FalApiError, cause: BaseException) -> NoReturn:
            sent = ticket.entry.state is JobState.UNKNOWN
            raise runner.timeout(spec.endpoint, None, spec.timeout, cancelled=False, sent=sent) from cause

        def before_retry(details: _retry.RetryDetails) -> None:
            if details.phase == "resubmit":
                ticket.next_job()

        return _retry.retrying(
            attempt, policy=runner.policy, classify=runner.classify_submission(spec.endpoint), deadline=spec.deadline,
            clock=runner.clock, hooks=self._hooks, model_id=spec.endpoint, on_retry=before_retry,
            on_deadline=out_of_time, pause=runner.sleep,
        )  # fmt: skip

    # -- web apps: submit, status, result, cancel ---------------------------------------------------

    def submit(self, plan: Plan, key: str | None, webhook_url: str | None) -> JobHandle:
        """Journal and submit the job, return its handle; an idempotency key returns the key's job."""
        self._reap_held()
        ticket = self.open(plan, key, webhook_url)
        spec = self.spec(plan, None, ticket.entry.webhook_url)
        try:
            if ticket.created:
                self.execute(ticket, spec, follow=False)
            else:
                replay(
                    ticket, spec, self._runner, self._reconciler, follow=False,
                    resubmit=lambda: self.execute(ticket, spec, follow=False),
                )  # fmt: skip
        except BaseException as exc:
            ticket.fail(exc)
            raise
        ticket.detach()
        return _handle(ticket.entry)

    def status(self, handle: JobHandle) -> JobStatus:
        """Where the job stands: from the journal when it is finished there, else one question to fal."""
        entry = self._accounts.ledger.journal.find(handle.request_id)
        if entry is not None and entry.done:
            self.let_go(handle.request_id)
            return JobStatus(handle.request_id, "COMPLETED", error=entry.error_message, error_type=entry.error_code)
        status = self._runner.status(_accepted(handle), handle.model_id)
        if status.done:
            self.let_go(handle.request_id)
        return status

    def result(self, handle: JobHandle, seconds: float) -> dict[str, Any]:
        """The job's output: the journal's (no HTTP), or the job followed to its end and settled once."""
        try:
            entry = self._accounts.ledger.journal.find(handle.request_id)
            if entry is not None and entry.done:
                return stored_output(entry).data
            now = self._runner.clock()
            arguments = dict(entry.arguments) if entry is not None else {}
            spec = JobSpec(handle.model_id, arguments, now + seconds, seconds, now)
            if entry is None:
                return self._collect_unjournaled(handle, spec)
            info = self._model_info(entry.endpoint)
            plan = Plan(entry.endpoint, info, arguments, entry.operation, entry.estimate, seconds)
            ticket = self._accounts.adopt(plan, entry)
            try:
                output = self._runner.complete(_accepted(handle), spec)
            except JobFailed as failure:
                ticket.job_failed(failure)
                ticket.fail(failure.error)
                raise failure.error from None
            except BaseException:
                # The job's outcome is still unknown: it keeps running (charged), and its one record
                # is written by whoever learns the outcome (a later result(), a webhook, reconcile).
                ticket.detach()
                raise
            ticket.succeed(output)
            return output.data
        finally:
            self.let_go(handle.request_id)

    def _collect_unjournaled(self, handle: JobHandle, spec: JobSpec) -> dict[str, Any]:
        """A job this store never journaled (sent by a process on another store): follow it, record it."""
        started = self._runner.clock()
        error: BaseException | None = None
        cost = Decimal(0)
        try:
            output = self._runner.complete(_accepted(handle), spec)
            cost = self._accounts.cost(self._model_info(handle.model_id), output.billable_units, output.data, {})
            return output.data
        except JobFailed as failure:
            error = failure.error
            raise failure.error from None
        except BaseException as exc:
            error = exc
            raise
        finally:
            ledger = self._accounts.ledger
            # Handles made before the journal carry a budget hold; end it with the record.
            hold = ledger.adopt(handle.reservation_id, handle.estimate_usd) if handle.reservation_id else None
            record = CallRecord(
                timestamp=ledger.clock(), model_id=handle.model_id, operation=handle.operation,
                duration_ms=int((self._runner.clock() - started) * 1000), cost_usd=cost, success=error is None,
                error_code=None if error is None else error_code(error), request_id=handle.request_id,
            )  # fmt: skip
            ledger.record(record, reservation=hold)

    def cancel(self, handle: JobHandle) -> bool:
        """Cancel at fal; a cancelled job stays charged at its estimate until fal shows it never ran."""
        cancelled = self._runner.cancel(_accepted(handle), handle.model_id)
        entry = self._accounts.ledger.journal.find(handle.request_id)
        if cancelled and entry is not None and not entry.done:
            error = ModelError(
                f"Request {handle.request_id} was cancelled.", error_code="client_cancelled",
                request_id=handle.request_id,
            )  # fmt: skip
            settlement = Settlement(JobState.CANCELLED, error_code="client_cancelled", error_message=str(error))
            plan = Plan(entry.endpoint, None, dict(entry.arguments), entry.operation, entry.estimate, 0.0)
            ticket = self._accounts.adopt(plan, entry)
            record = self._accounts.make_record(
                plan, ticket.started, entry.cost, error, handle.request_id, entry.job_id
            )
            self._accounts.finish(entry, settlement, record)
        self.let_go(handle.request_id)
        return cancelled

    # -- concurrency places -----------------------------------------------------------------------

    def _acquire(self, deadline: float) -> Slot | None:
        cap = self._limiter.concurrency
        if cap is None:
            return None
        slot = cap.acquire(timeout=within_wait_bound(max(0.0, deadline - self._runner.clock())))
        self._leases.hold(slot)
        return slot

    def _release(self, slot: Slot | None) -> None:
        if slot is not None:
            self._leases.drop(slot)
            slot.release()

    def _hold(self, request_id: str, slot: Slot | None) -> None:
        if slot is not None:
            with self._lock:
                self._held[request_id] = (slot, self._runner.clock())

    def let_go(self, request_id: str) -> None:
        """Free the place held for a submitted job (it was seen finished)."""
        with self._lock:
            held = self._held.pop(request_id, None)
        if held is not None:
            self._release(held[0])

    def _reap_held(self) -> None:
        """Free the places of submitted jobs nobody asked about within the longest deadline.

        The jobs stay in the journal, charged at their estimates, until reconciliation
        collects their results; only the concurrency place is given back.
        """
        horizon = self._runner.clock() - max(self._config.timeouts.video_long, self._config.timeouts.image)
        with self._lock:
            stale = [rid for rid, (_slot, since) in self._held.items() if since < horizon]
        for request_id in stale:
            self.let_go(request_id)


def _accepted(handle: JobHandle) -> Accepted:
    return Accepted(handle.request_id, handle.status_url, handle.response_url, handle.cancel_url)


def _handle(entry: JobEntry) -> JobHandle:
    handle = JobHandle.from_entry(entry)
    if handle is None:  # pragma: no cover - submit() returns only after acceptance
        msg = f"job {entry.job_id} has no request id"
        raise RuntimeError(msg)
    return handle


def image_result(output: Output, plan: Plan, cost: Decimal, ms: int, client: FalClient) -> ImageResult:
    """An :class:`ImageResult` from a job's output."""
    data = output.data
    seed = data.get("seed")
    # Generators answer a list of images; upscalers a single ``image``.
    single = data.get("image")
    items = data.get("images") or ([single] if isinstance(single, Mapping) else [])
    return ImageResult(
        images=[Image.from_json(item) for item in items],
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        has_nsfw_concepts=[bool(x) for x in data.get("has_nsfw_concepts") or ()],
        model=plan.endpoint, request_id=output.request_id, cost_usd=cost, duration_ms=ms, raw=data, client=client,
    )  # fmt: skip


def video_result(output: Output, plan: Plan, cost: Decimal, ms: int, client: FalClient) -> VideoResult:
    """A :class:`VideoResult` from a job's output.

    Raises:
        ServerError: fal's answer has no video.
    """
    video = output.data.get("video")
    if not isinstance(video, Mapping):
        msg = f"fal's answer for {plan.endpoint} (request {output.request_id}) has no video. Report it to fal."
        raise ServerError(msg, error_code="MALFORMED_RESPONSE", request_id=output.request_id)
    return VideoResult(
        video=Video.from_json(video), model=plan.endpoint, request_id=output.request_id, cost_usd=cost,
        duration_ms=ms, raw=output.data, client=client,
    )  # fmt: skip
