"""FakeFal's webhook deliveries: signed POSTs when a job ends, fal's retry schedule, scripted faults.

Jobs submitted with ``?fal_webhook=URL`` get one delivery when they end (a
result, a failure or a cancellation), POSTed from a background thread pool
and signed like fal's (see ``webhook_keys``). A delivery answered with a
non-2xx status, or not answered, is retried ``len(RETRY_DELAYS_S)`` times on
fal's two-hour schedule, multiplied by the emulator's ``webhook_time_scale``.
Only loopback URLs are accepted: the emulator never sends traffic off the machine.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import attrs
import httpx

from falwrap.testing.board import JobBoard
from falwrap.testing.jobs import Job
from falwrap.testing.webhook_faults import WebhookFault, WebhookFaultQueue
from falwrap.testing.webhook_keys import WebhookSigner

__all__ = ["RETRY_DELAYS_S", "WebhookAttempt", "WebhookDispatcher", "delivery_body", "webhook_url_problem"]

logger = logging.getLogger(__name__)

#: fal retries a failed delivery 10 times over 2 hours; waits that double from about
#: 7 s add up to exactly 7200 s (7.04 s, 14.1 s, ... 3603 s).
RETRY_DELAYS_S: tuple[float, ...] = tuple(7200.0 * 2**i / (2**10 - 1) for i in range(10))

#: How long one attempt waits for the receiver's answer, in real seconds.
DELIVERY_TIMEOUT_S = 10.0

#: Deliveries in flight at once; more wait for a worker.
_WORKERS = 8


def webhook_url_problem(url: str) -> str | None:
    """Why the emulator refuses to call ``url``, or None when it will.

    Args:
        url: the ``fal_webhook`` of a submission.

    Returns:
        A message for a 422 answer, or None for an http(s) URL on 127.0.0.1, ::1 or localhost.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"fal_webhook {url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"fal_webhook {url!r} is not an http:// or https:// URL"
    if host == "localhost":
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else f"FakeFal only delivers webhooks to 127.0.0.1, ::1 or localhost, not {host!r}"


def delivery_body(job: Job) -> bytes:
    """The JSON fal POSTs when ``job`` ends; the caller holds the board's lock.

    Args:
        job: a completed job.

    Returns:
        ``{request_id, gateway_request_id, status, payload, error, payload_error}``: ``OK``
        with the output, or ``ERROR`` with the body the result route answers for the failure.
    """
    failure = job.error
    if failure is None:
        status, payload, error = "OK", job.output, None
    else:
        status, error = "ERROR", f"Invalid status code: {failure.status}"
        # The same body the result route answers, a cancellation included.
        payload = {"detail": failure.message} if job.outcome == "cancelled" else failure.body()
    document = {
        "request_id": job.request_id,
        "gateway_request_id": job.gateway_request_id,
        "status": status,
        "payload": payload,
        "error": error,
        "payload_error": None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


@attrs.frozen
class WebhookAttempt:
    """One POST of one delivery, as the emulator made it.

    Attributes:
        request_id: the job's request id.
        url: where it was sent.
        copy: which copy of the delivery (1 unless duplicated).
        attempt: 1 for the first try, 2 and up for retries.
        status_code: the receiver's answer, or None when none came.
        error: why no answer came (connection refused, timeout), else None.
        sent_at: ``time.monotonic()`` when the POST started.
    """

    request_id: str
    url: str
    copy: int
    attempt: int
    status_code: int | None
    error: str | None
    sent_at: float

    @property
    def delivered(self) -> bool:
        """Whether the receiver accepted it (any 2xx).

        Returns:
            True for a 2xx answer.
        """
        return self.status_code is not None and 200 <= self.status_code < 300


@attrs.define
class _Chain:
    """One copy of one delivery and its retries."""

    request_id: str
    url: str
    body: bytes = attrs.field(repr=False)
    copy: int
    attempts: int = 0


class WebhookDispatcher:
    """Sends the webhook deliveries of one emulator. Thread-safe.

    The job board only advances when asked, so while a job with a webhook is
    unfinished the dispatcher's clock thread advances it at each due event:
    the delivery leaves when the job ends, whether or not anyone polls.

    Args:
        board: the emulator's jobs; the dispatcher must be set as its observer.
        signer: the keys deliveries are signed with.
        time_scale: multiplies fal's retry delays (0.001 makes two hours 7.2 s).
        clock: the board's monotonic clock.
    """

    def __init__(
        self,
        board: JobBoard,
        signer: WebhookSigner,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._board = board
        self._signer = signer
        self._time_scale = time_scale
        self._clock = clock
        self._faults = WebhookFaultQueue()
        # _cond guards everything below; the board's lock may be held when taking it, never the reverse.
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, tuple[_Chain, ...]]] = []
        self._seq = itertools.count()
        self._held: list[_Chain] = []
        self._unfinished = 0
        self._running = 0
        self._attempts: list[WebhookAttempt] = []
        self._dropped: list[str] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:
        with self._cond:
            return f"<WebhookDispatcher attempts={len(self._attempts)} scheduled={len(self._due)}>"

    # -- lifecycle (called by FakeFal) ----------------------------------------

    def start(self) -> None:
        """Start the clock thread and the delivery pool."""
        with self._cond:
            self._stopping = False
        # trust_env=False: no proxy from the environment; no redirects: a 3xx never leads off the machine.
        self._http = httpx.Client(trust_env=False, follow_redirects=False, timeout=DELIVERY_TIMEOUT_S)
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="fakefal-webhook")
        self._thread = threading.Thread(
            target=self._run, args=(self._pool, self._http), name="fakefal-webhook-clock", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the clock thread and wait for attempts in flight; scheduled deliveries wait for a restart."""
        with self._board.cond:
            with self._cond:
                self._stopping = True
            self._board.cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._http is not None:
            self._http.close()
        self._thread = self._pool = self._http = None

    # -- job observer (called by the board, under its lock) ------------------

    def job_accepted(self, job: Job) -> None:
        """Note a job whose end must be delivered.

        Args:
            job: the accepted job.
        """
        if job.webhook_url is None:
            return
        with self._cond:
            self._unfinished += 1

    def job_ended(self, job: Job) -> None:
        """Schedule the delivery of a job that just ended (a result, a failure or a cancellation).

        Args:
            job: the completed job.
        """
        if job.webhook_url is None:
            return
        fault = self._faults.take() or WebhookFault()
        chains = [_Chain(job.request_id, job.webhook_url, delivery_body(job), copy) for copy in range(fault.copies)]
        with self._cond:
            self._unfinished -= 1
            if fault.dropped:
                self._dropped.append(job.request_id)
            elif fault.reorder_batch:
                self._held.extend(chains)
                if len(self._held) >= fault.reorder_batch:
                    batch, self._held = tuple(reversed(self._held)), []
                    self._schedule_locked(self._clock() + fault.delay_s, batch)
            else:
                due = (job.completed_at or self._clock()) + fault.delay_s
                for chain in chains:
                    self._schedule_locked(due, (chain,))
            self._cond.notify_all()

    # -- scripting and observations -----------------------------------------

    def inject(self, fault: WebhookFault, times: int = 1) -> None:
        """Apply ``fault`` to the deliveries of the next ``times`` jobs that end.

        Args:
            fault: what to do.
            times: how many jobs.

        Raises:
            ValueError: when ``times < 1``.
            TypeError: when ``fault`` is not a WebhookFault.
        """
        self._faults.add(fault, times)

    def clear_faults(self) -> None:
        """Forget every webhook fault not consumed yet."""
        self._faults.clear()

    @property
    def user_id(self) -> str:
        """The ``X-Fal-Webhook-User-Id`` of every delivery.

        Returns:
            The id.
        """
        return self._signer.user_id

    @property
    def attempts(self) -> list[WebhookAttempt]:
        """Every POST made, in the order they ended.

        Returns:
            A copy of the list.
        """
        with self._cond:
            return list(self._attempts)

    @property
    def deliveries(self) -> int:
        """POSTs the receivers accepted (2xx), duplicates included.

        Returns:
            The count.
        """
        with self._cond:
            return sum(1 for attempt in self._attempts if attempt.delivered)

    def attempts_per_request(self) -> dict[str, int]:
        """POSTs made per request id, retries and copies included.

        Returns:
            request id -> count.
        """
        with self._cond:
            return dict(Counter(attempt.request_id for attempt in self._attempts))

    @property
    def dropped(self) -> list[str]:
        """Request ids whose delivery a ``WebhookFault.drop()`` lost.

        Returns:
            In the order the jobs ended.
        """
        with self._cond:
            return list(self._dropped)

    def sign(self, body: bytes, request_id: str, timestamp: int | None = None) -> dict[str, str]:
        """Sign any body as a delivery, with the current key: for testing a receiver's checks.

        Args:
            body: the exact bytes to send.
            request_id: the ``X-Fal-Webhook-Request-Id``.
            timestamp: epoch seconds; now when None.

        Returns:
            The four ``X-Fal-Webhook-*`` headers.
        """
        return self._signer.headers(request_id, int(time.time()) if timestamp is None else timestamp, body)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every webhook job has ended and every delivery is done, retries included.

        Deliveries held by a ``reorder`` fault whose batch is not full count as not done.

        Args:
            timeout: seconds to wait at most.

        Returns:
            True when idle, False on timeout.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._unfinished or self._due or self._held or self._running), timeout
            )

    def reset(self) -> None:
        """Forget the recorded attempts and drops (scheduled deliveries still go out)."""
        with self._cond:
            self._attempts.clear()
            self._dropped.clear()

    # -- delivery --------------------------------------------------------------

    def _schedule_locked(self, when: float, chains: tuple[_Chain, ...]) -> None:
        heapq.heappush(self._due, (when, next(self._seq), chains))

    def _run(self, pool: ThreadPoolExecutor, http: httpx.Client) -> None:
        board = self._board
        with board.cond:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    drive = self._unfinished > 0
                now = self._clock()
                if drive:
                    board.advance_locked(now)
                with self._cond:
                    ready = []
                    while self._due and self._due[0][0] <= now:
                        ready.append(heapq.heappop(self._due)[2])
                    self._running += len(ready)
                    deadlines = [self._due[0][0]] if self._due else []
                for chains in ready:
                    pool.submit(self._deliver, chains, http)
                board_next = board.next_event_at() if drive else None
                if board_next is not None:
                    deadlines.append(board_next)
                board.cond.wait(max(0.001, min(deadlines) - now) if deadlines else None)

    def _deliver(self, chains: tuple[_Chain, ...], http: httpx.Client) -> None:
        try:
            for chain in chains:
                self._attempt(chain, http)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _attempt(self, chain: _Chain, http: httpx.Client) -> None:
        chain.attempts += 1
        headers = {"Content-Type": "application/json", "User-Agent": "FakeFal-webhook/1"}
        headers.update(self._signer.headers(chain.request_id, int(time.time()), chain.body))
        sent_at = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = http.post(chain.url, content=chain.body, headers=headers).status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt = WebhookAttempt(
            chain.request_id, chain.url, chain.copy + 1, chain.attempts, status_code, error, sent_at
        )
        retry = not attempt.delivered and chain.attempts <= len(RETRY_DELAYS_S)
        with self._cond:
            self._attempts.append(attempt)
            if retry:
                self._schedule_locked(self._clock() + RETRY_DELAYS_S[chain.attempts - 1] * self._time_scale, (chain,))
            self._cond.notify_all()
        if retry:
            # Wake the clock thread: the retry may be due before what it waits for.
            with self._board.cond:
                self._board.cond.notify_all()
        if not attempt.delivered:
            logger.debug("Webhook delivery of %s failed: %s", chain.request_id, error or status_code)
