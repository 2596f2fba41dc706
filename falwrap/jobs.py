"""The job runner: fal's queue protocol for one job, over an injected HTTP client, clock and sleep.

It submits (and, when an answer was lost, finds out whether fal accepted the
job), follows the request id on the status stream or by polling, fetches the
result or the job's error, and cancels. It returns outcomes and raises typed
errors; it knows nothing of ledgers, budgets or journals: it tells a
:class:`SubmitListener` when fal accepted a job (or may have), and the caller
writes that down.

Every exchange goes through :func:`falwrap.retry.retrying` and runs under the
job's deadline (:func:`falwrap.transport.budget`), measured on the injected clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import NoReturn, TypeVar

import fal_client
import httpx

from falwrap import retry as _retry
from falwrap.config.rules import MIN_START_TIMEOUT_S
from falwrap.errors import (
    AmbiguousSubmissionError,
    FalApiError,
    FalConnectionError,
    FalTimeoutError,
    ModelError,
    ServerError,
)
from falwrap.following import DeadlinePassed, Follower, JobStatusParseError
from falwrap.interrupts import deferred_interrupt
from falwrap.job_types import JobFailed, JobSpec, Output, SubmitListener, queue_urls
from falwrap.journal import Accepted, RequestTaken
from falwrap.platform import PlatformApi, PlatformUnavailable, RequestRecord, canonical_json
from falwrap.responses import RETRYABLE_ERROR_TYPES, error_from_response, parse_billable_units
from falwrap.results import JobStatus
from falwrap.retry import RetryHook, RetryPolicy
from falwrap.transport import DeadlineExceeded, ExchangeError, budget

__all__ = ["CANCEL_GRACE", "DeadlinePassed", "JobRunner"]

logger = logging.getLogger("falwrap")

_T = TypeVar("_T")

#: Time allowed to cancel a job after its deadline passed (the promise is that
#: FalTimeoutError comes within deadline + 1 s).
CANCEL_GRACE = 0.9

#: How long to look for a submission whose answer was lost in fal's request list,
#: which can lag behind the queue by a few seconds, before concluding fal never saw it
#: (a short, bounded wait: the call's deadline still bounds everything).
RESOLVE_WAIT = 3.0

#: Polls of the request list while waiting for it to catch up.
RESOLVE_POLL = 0.5

#: A request in fal's list that matches a lost submission is adopted only once it has stayed
#: unowned this long: the call that really sent it journals its answer within milliseconds.
ADOPT_AFTER = 0.3

#: Slack on the clocks (ours and fal's) when asking which requests arrived around a submission.
CLOCK_SKEW = timedelta(seconds=10)


class JobRunner:
    """Runs fal queue jobs. Thread-safe: one runner serves every thread of a client.

    Args:
        fal: fal_client's SyncClient, sharing ``http``'s connection pool.
        http: The HTTP client (its transport routes fal's hosts and enforces deadlines).
        policy: The retry policy every phase starts from.
        per_exchange: Longest single exchange, seconds (a stalled one is retried).
        poll_interval: First polling interval when the status stream is not used.
        status_stream: Follow jobs on fal's status stream when the host offers it.
        platform: fal's platform API, to find submissions whose answer was lost.
        resubmit_ambiguous: Resubmit when the platform API cannot tell (may pay twice).
        hooks: Retry hooks.
        clock: Monotonic seconds.
        sleep: Sleeps a backoff or polling interval (default: :func:`falwrap.retry.sleep`,
            which testing mode turns off).
        wait: Sleeps while fal's request list catches up with the queue: a wait for fal's
            data, not a backoff, so testing mode does not turn it off (default ``time.sleep``).
        wall_clock: The current aware UTC time (to ask which requests arrived when).
    """

    def __init__(
        self,
        fal: fal_client.SyncClient,
        http: httpx.Client,
        *,
        policy: RetryPolicy,
        per_exchange: float,
        poll_interval: float,
        status_stream: bool = True,
        platform: PlatformApi | None = None,
        resubmit_ambiguous: bool = False,
        hooks: tuple[RetryHook, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = _retry.sleep,
        wait: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self._fal = fal
        self._http = http
        self.policy = policy
        self.per_exchange = per_exchange
        self._platform = platform
        self._resubmit_ambiguous = resubmit_ambiguous
        self._hooks = hooks
        self.clock = clock
        self.sleep = sleep
        self.wait = wait
        self._wall_clock = wall_clock
        self._follower = Follower(
            http,
            exchange=self.exchange,
            poll_interval=poll_interval,
            stream=status_stream,
            clock=clock,
            sleep=sleep,
        )

    # -- submission ------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, listener: SubmitListener, *, attempts: int = 1) -> Accepted:
        """Send the submission once; return fal's answer, found again if it was lost.

        A Ctrl-C during the exchange is held until it ends (see :mod:`falwrap.interrupts`):
        a job fal accepted is journaled and cancelled before ``KeyboardInterrupt`` is raised.

        Raises:
            ExchangeError: the submission failed before fal accepted it (the caller's
                retry loop classifies it with :meth:`classify_submission`).
            AmbiguousSubmissionError: it may have reached fal and fal's request list
                cannot tell; nothing was resubmitted.
            FalConnectionError: retryable: fal's request list shows it never arrived.
            DeadlinePassed: no time was left to send it.
        """
        sent_at = self._wall_clock()
        lost: BaseException | None = None
        with deferred_interrupt() as interrupt:
            try:
                accepted, lost = self._send(spec)
            except BaseException:
                # The submission failed for good before fal accepted it: a held Ctrl-C wins.
                if interrupt.pending:
                    raise KeyboardInterrupt from None
                raise
            if accepted is not None:
                # Journaled before a Ctrl-C can land: a job whose request id is lost cannot be cancelled
                # (a journal on disk takes milliseconds to write it).
                listener.accepted(accepted)
        if accepted is None:
            assert lost is not None
            listener.ambiguous()
            if interrupt.pending:
                raise KeyboardInterrupt
            accepted = self._resolve(spec, listener, sent_at, lost, attempts)
        logger.debug("[falwrap] submitted %s as request %s", spec.endpoint, accepted.request_id)
        if interrupt.pending:
            self.cancel_quietly(accepted, spec.endpoint)
            raise KeyboardInterrupt
        return accepted

    def _send(self, spec: JobSpec) -> tuple[Accepted | None, BaseException | None]:
        """One submission exchange: fal's answer, or ``(None, why)`` when it may have arrived unanswered."""
        options = spec.options
        # Without a start timeout of its own, a job may wait in fal's queue only as long as the
        # call will wait for it: past the deadline nobody follows it, so fal should drop it.
        start = options.start_timeout if options.start_timeout is not None else spec.deadline - self.clock()
        try:
            with budget(spec.deadline, self.per_exchange, self.clock):
                handle = self._fal.submit(
                    spec.endpoint,
                    dict(spec.arguments),
                    webhook_url=options.webhook_url,
                    priority=options.priority,  # type: ignore[arg-type]
                    headers=options.headers(),
                    # fal refuses start timeouts of a second or less.
                    start_timeout=start if start > MIN_START_TIMEOUT_S else None,
                )
        except DeadlineExceeded:
            raise DeadlinePassed(None) from None
        except ExchangeError as exc:
            if exc.response is not None or not exc.sent:
                raise
            return None, exc
        except (ValueError, KeyError, TypeError) as exc:
            # A 2xx whose body is not the queue's answer: the job may exist.
            return None, exc
        return Accepted(handle.request_id, handle.status_url, handle.response_url, handle.cancel_url), None

    def _resolve(
        self, spec: JobSpec, listener: SubmitListener, sent_at: datetime, lost: BaseException, attempts: int
    ) -> Accepted:
        """Find a submission whose answer was lost in fal's request list, or prove it is not there."""
        what = f"The submission to {spec.endpoint} may have reached fal, but its answer was lost ({lost!r})"
        if self._platform is None:
            raise self._ambiguous(what + ", and falwrap has no way to ask fal which requests it received.", attempts)
        wanted = canonical_json(dict(spec.arguments))
        taken: set[str] = set()
        # When a candidate was first seen unowned: a live call journals its own answer within
        # milliseconds, so one still unowned after ADOPT_AFTER is nobody else's.
        first_seen: dict[str, float] = {}

        def ours(record: RequestRecord) -> bool:
            return (
                record.request_id not in taken
                and canonical_json(record.json_input) == wanted
                and not listener.known(record.request_id)
            )

        # Look again while the list may still lag behind the queue; each look may take the
        # time the call has left (a busy endpoint's list is long), the looking stops at RESOLVE_WAIT.
        stop_looking = self.clock() + RESOLVE_WAIT
        while True:
            window_end = self._wall_clock() + CLOCK_SKEW
            try:
                records = self._platform.requests(
                    spec.endpoint, deadline=spec.deadline, start=sent_at - CLOCK_SKEW, end=window_end, until=ours
                )
            except PlatformUnavailable as exc:
                if self._resubmit_ambiguous:
                    msg = f"{what}; fal's request list could not tell ({exc.reason}); resubmitting as configured."
                    raise FalConnectionError(msg, retryable=True, attempts=attempts) from exc
                why = f"{what}, and fal's request list could not tell ({exc.reason})."
                raise self._ambiguous(why, attempts) from exc
            now = self.clock()
            waiting = False
            for record in records:
                if not ours(record):
                    continue
                if now - first_seen.setdefault(record.request_id, now) < ADOPT_AFTER:
                    waiting = True
                    continue
                candidate = queue_urls(spec.endpoint, record.request_id)
                try:
                    listener.accepted(candidate, found=True)
                except RequestTaken:
                    taken.add(record.request_id)
                    continue
                return candidate
            pause = ADOPT_AFTER if waiting else RESOLVE_POLL
            if not waiting and self.clock() + pause >= min(stop_looking, spec.deadline):
                break
            if self.clock() + pause >= spec.deadline:
                why = f"{what}, and the call's deadline came before fal's request list could tell."
                raise self._ambiguous(why, attempts)
            self.wait(pause)
        listener.never_arrived()
        msg = f"{what}; fal's request list shows it never arrived: nothing runs at fal for it."
        return self._raise_retryable(msg, attempts)

    @staticmethod
    def _raise_retryable(message: str, attempts: int) -> NoReturn:
        raise FalConnectionError(message, error_code="SUBMISSION_LOST", retryable=True, attempts=attempts)

    def ambiguous_for_key(self, endpoint: str, reason: str) -> AmbiguousSubmissionError:
        """The error for a keyed call that found its job's submitter dead and fal's request list silent."""
        what = (
            f"An earlier call with this idempotency key died while submitting to {endpoint}, and fal's "
            f"request list could not tell whether the submission arrived ({reason})."
        )
        return self._ambiguous(what, 1)

    @staticmethod
    def _ambiguous(message: str, attempts: int) -> AmbiguousSubmissionError:
        msg = (
            f"{message} It was not resubmitted, so as not to pay twice; the job is journaled as unknown and its "
            "estimate stays charged. Run FalClient.reconcile() (or `falwrap reconcile`) to settle it."
        )
        return AmbiguousSubmissionError(msg, attempts=attempts)

    def classify_submission(self, endpoint: str) -> Callable[[BaseException, int], tuple[str, FalApiError] | None]:
        """How the submission retry loop reads a failed attempt (``resubmit`` for a job that failed)."""

        def classify(exc: BaseException, attempts: int) -> tuple[str, FalApiError] | None:
            if isinstance(exc, ExchangeError):
                return "submit", self.exchange_error(exc, endpoint, None, attempts)
            if isinstance(exc, JobFailed):
                exc.error.attempts = attempts
                return "resubmit", exc.error
            if isinstance(exc, FalConnectionError) and exc.error_code == "SUBMISSION_LOST":
                return "submit", exc
            return None

        return classify

    # -- following, results, job errors ------------------------------------------------------------

    def complete(self, accepted: Accepted, spec: JobSpec, *, attempts: int = 1) -> Output:
        """Follow an accepted job to its end and fetch its output.

        Whatever ends the call early (the deadline, an error after retries, a raising
        progress callback, ``KeyboardInterrupt``) cancels the job at fal first.

        Raises:
            JobFailed: the job ran and failed.
            FalTimeoutError: the deadline passed; the job was cancelled at fal.
            FalApiError: following or fetching failed after retries.
        """
        try:
            status = self._follower.follow(accepted, spec)
            if not status.failed:
                return self.fetch(accepted, spec.endpoint, spec.deadline)
            failure = self.job_error(accepted, spec.endpoint, status, spec.deadline, attempts)
        except DeadlinePassed:
            self.cancel_quietly(accepted, spec.endpoint)
            raise self.timeout(spec.endpoint, accepted.request_id, spec.timeout, cancelled=True) from None
        except BaseException:
            self.cancel_quietly(accepted, spec.endpoint)
            raise
        raise failure

    def follow(self, accepted: Accepted, spec: JobSpec) -> JobStatus:
        """Follow the job until it completes (see :class:`falwrap.following.Follower`)."""
        return self._follower.follow(accepted, spec)

    def fetch(self, accepted: Accepted, endpoint: str, deadline: float, *, job_error_type: str | None = None) -> Output:
        """The job's output, read from its result URL (with ``x-fal-billable-units``).

        ``job_error_type`` (``""`` when unknown) means the status said the job failed:
        an answer carrying that error is the job's outcome, not a fault to retry.
        """

        def exchange() -> Output:
            response = self._http.get(accepted.response_url)
            data = response.json()
            if not isinstance(data, dict):
                msg = f"expected a JSON object, got {type(data).__name__}"
                raise TypeError(msg)
            units = parse_billable_units(response.headers.get("x-fal-billable-units"))
            return Output(data, accepted.request_id, units)

        return self.exchange(
            "result", exchange, endpoint=endpoint, request_id=accepted.request_id, deadline=deadline,
            job_error_type=job_error_type,
        )  # fmt: skip

    def job_error(
        self, accepted: Accepted, endpoint: str, status: JobStatus, deadline: float, attempts: int
    ) -> JobFailed:
        """A job that completed with an error: its typed error, read from its result, and what fal billed.

        When the result cannot be read (a gateway failing every retry, or a 2xx although the
        status said the job failed), the status's error stands and what fal billed is unknown.
        """
        try:
            self.fetch(accepted, endpoint, deadline, job_error_type=status.error_type or "")
        except ModelError as exc:
            exc.attempts = attempts
            own = status.error_type in {None, "", exc.error_code}
            return JobFailed(exc, exc.billable_units, billed_known=own)
        except FalApiError as exc:
            if exc.request_id == accepted.request_id and exc.status_code not in {None, 401, 403, 404, 429}:
                exc.attempts = attempts
                return JobFailed(exc, None, billed_known=False)
            raise
        # The result answered 2xx although the status said the job failed: trust the status.
        error_type = status.error_type or "MODEL_ERROR"
        msg = f"The job (request {accepted.request_id}) failed calling {endpoint}: {status.error or error_type}."
        error = ModelError(
            msg, error_code=error_type, request_id=accepted.request_id,
            retryable=error_type in RETRYABLE_ERROR_TYPES, attempts=attempts,
        )  # fmt: skip
        return JobFailed(error, None, billed_known=False)

    def status(self, accepted: Accepted, endpoint: str) -> JobStatus:
        """Ask fal once where the job stands (transient failures retried briefly)."""
        deadline = self.clock() + self.per_exchange * (self.policy.max_retries + 1)
        return self.exchange(
            "status", lambda: self._follower.poll_once(accepted, logs=False),
            endpoint=endpoint, request_id=accepted.request_id, deadline=deadline,
        )  # fmt: skip

    # -- cancelling ------------------------------------------------------------------------------

    def cancel(self, accepted: Accepted, endpoint: str) -> bool:
        """Cancel the job at fal: ``True`` if fal accepted the cancellation, ``False`` if it had completed."""
        deadline = self.clock() + self.per_exchange * (self.policy.max_retries + 1)
        return self.exchange(
            "cancel", lambda: self._cancel_once(accepted), endpoint=endpoint,
            request_id=accepted.request_id, deadline=deadline,
        )  # fmt: skip

    def _cancel_once(self, accepted: Accepted) -> bool:
        try:
            self._http.put(accepted.cancel_url)
        except ExchangeError as exc:
            if exc.response is not None and exc.response.status_code == 400:
                return False
            raise
        return True

    def cancel_quietly(self, accepted: Accepted, endpoint: str) -> bool | None:
        """Best-effort cancel within :data:`CANCEL_GRACE`; ``None`` when it could not be done. Never raises."""
        grace = self.clock() + CANCEL_GRACE
        try:
            with budget(grace, CANCEL_GRACE, self.clock):
                cancelled = self._cancel_once(accepted)
        except (ExchangeError, DeadlineExceeded, httpx.HTTPError) as exc:
            logger.warning("[falwrap] could not cancel request %s at fal: %s", accepted.request_id, exc)
            return None
        logger.info(
            "[falwrap] %s request %s at fal (%s)",
            "cancelled" if cancelled else "could not cancel finished",
            accepted.request_id,
            endpoint,
        )
        return cancelled

    # -- the exchange loop and errors -----------------------------------------------------------

    def exchange(
        self,
        phase: str,
        call: Callable[[], _T],
        *,
        endpoint: str | None,
        request_id: str | None,
        deadline: float,
        job_error_type: str | None = None,
    ) -> _T:
        """Run one exchange about an accepted job; transient failures retry the same exchange.

        Nothing here submits: a job fal accepted is never submitted again.

        Raises:
            DeadlinePassed: no time was left (the caller cancels the job).
            FalApiError: the exchange failed for good.
        """

        def attempt() -> _T:
            try:
                with budget(deadline, self.per_exchange, self.clock):
                    return call()
            except DeadlineExceeded:
                raise DeadlinePassed(request_id) from None

        def classify(exc: BaseException, attempts: int) -> tuple[str, FalApiError] | None:
            if isinstance(exc, ExchangeError):
                error = self.exchange_error(exc, endpoint, request_id, attempts, job_error_type=job_error_type)
                if isinstance(error, ModelError) and job_error_type in {"", error.error_code}:
                    raise error from exc
                return phase, error
            if isinstance(exc, (ValueError, KeyError, TypeError, JobStatusParseError)):
                msg = f"fal's {phase} answer for request {request_id} could not be read ({exc!r})."
                error = ServerError(
                    msg, error_code="MALFORMED_RESPONSE", request_id=request_id, retryable=True, attempts=attempts
                )
                return phase, error
            return None

        def out_of_time(_error: FalApiError, cause: BaseException) -> NoReturn:
            raise DeadlinePassed(request_id) from cause

        return _retry.retrying(
            attempt, policy=self.policy, classify=classify, deadline=deadline, clock=self.clock, hooks=self._hooks,
            model_id=endpoint, request_id=request_id, on_deadline=out_of_time, pause=self.sleep,
        )  # fmt: skip

    def exchange_error(
        self,
        exc: ExchangeError,
        endpoint: str | None,
        request_id: str | None,
        attempts: int,
        *,
        job_error_type: str | None = None,
    ) -> FalApiError:
        """The typed error of a failed exchange.

        ``job_error_type`` is set when the answer is a failed job's result. A cancelled job's
        499 names no error type itself; its status's does. Other answers keep their own:
        a gateway's 503 in front of a failed job's result is not the job's error.
        """
        response = exc.response
        if response is not None:
            headers = dict(response.headers)
            if job_error_type and response.status_code == 499 and "x-fal-error-type" not in response.headers:
                headers["x-fal-error-type"] = job_error_type
            return error_from_response(
                response.status_code, headers, response.content, request_id=request_id,
                job_failed=job_error_type is not None, model_id=endpoint, attempts=attempts,
                queue_phase=request_id is not None,
            )  # fmt: skip
        what = f" calling {endpoint}" if endpoint else ""
        rid = f" (request {request_id})" if request_id else ""
        if exc.timed_out:
            msg = f"fal did not answer in time{what}{rid}. It may be overloaded; try again shortly."
            return FalConnectionError(
                msg, error_code="TIMEOUT", request_id=request_id, retryable=True, attempts=attempts
            )
        msg = (
            f"Could not reach fal{what}{rid}: {type(exc.cause).__name__}. "
            "Check the network (and FAL_BASE_URL if set), then try again."
        )
        return FalConnectionError(msg, request_id=request_id, retryable=True, attempts=attempts)

    @staticmethod
    def timeout(
        endpoint: str, request_id: str | None, timeout: float | None, *, cancelled: bool, sent: bool = False
    ) -> FalTimeoutError:
        """The error for a deadline that passed; its message says only what falwrap knows of the job."""
        limit = f" within {timeout:g} s" if timeout else " before its deadline"
        if request_id is not None:
            where = f" (request {request_id}, cancelled at fal)" if cancelled else f" (request {request_id})"
        elif sent:
            where = " (its submission may have reached fal; it is journaled until reconcile() settles it)"
        else:
            where = " (nothing was sent to fal)"
        msg = (
            f"The call to {endpoint} did not finish{limit}{where}. "
            "Pass a larger timeout= or raise the FAL_TIMEOUT_* setting."
        )
        return FalTimeoutError(msg, request_id=request_id)
