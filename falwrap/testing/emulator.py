"""FakeFal: the public face of the emulator — start/stop, URL and key, knobs and observations."""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any

import attrs

from falwrap.testing.api import FalApi
from falwrap.testing.behaviour import Behaviour
from falwrap.testing.billing import BillingRecord
from falwrap.testing.faults import Fault, FaultQueue
from falwrap.testing.jobs import JobView
from falwrap.testing.models import FakeModel, JobFailure, default_models
from falwrap.testing.server import FakeFalServer
from falwrap.testing.webhook_faults import WebhookFault
from falwrap.testing.webhooks import WebhookDispatcher

__all__ = ["FakeFal"]


class FakeFal:
    """A real HTTP server on 127.0.0.1 speaking fal's queue, sync-run, storage and platform APIs.

    Point a client at it with ``base_url=fal.url`` and ``api_key=fal.key``, or
    reroute fal's hosts to it with ``RouteToFakeFal`` (which names the fal host
    in ``X-Forwarded-Host``); every route needs ``Authorization: Key <key>``
    (or ``Bearer <key>``) except file downloads.  Jobs run for a simulated
    ``latency``, at most ``concurrency`` at a time account-wide; the rest wait
    IN_QUEUE with real positions.  ``behaviour`` chooses between fal's real
    behaviour (the default: results expire, the queue retries failed runners,
    video is billed on its length...) and an ideal one.  All methods and
    properties are thread-safe.

    Args:
        key: the API key to accept; a random ``"<id>:<secret>"`` when None.
        models: endpoint id -> FakeModel; by default every catalog model plus
            the built-in flux and kling endpoints.
        concurrency: runners busy at once, account-wide.
        latency: when set, the run time of every model's jobs, in seconds.
        host: interface to bind (keep 127.0.0.1).
        port: TCP port; 0 picks a free one.
        behaviour: which of fal's behaviours to reproduce (default ``Behaviour()``).
        webhook_time_scale: multiplies fal's webhook retry schedule (10 retries over
            2 hours); 0.001 runs it in 7.2 s.

    Raises:
        ValueError: when ``concurrency < 1`` or ``webhook_time_scale`` is not finite and > 0.
        TypeError: when ``webhook_time_scale`` is not a number.

    Example::

        with FakeFal() as fal:
            client = FalClient(FalConfig(api_key=fal.key, base_url=fal.url))
    """

    def __init__(
        self,
        key: str | None = None,
        models: Mapping[str, FakeModel] | None = None,
        concurrency: int = 4,
        latency: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
        webhook_time_scale: float = 1.0,
    ) -> None:
        if concurrency < 1:
            msg = f"concurrency must be >= 1, got {concurrency}"
            raise ValueError(msg)
        if isinstance(webhook_time_scale, bool) or not isinstance(webhook_time_scale, (int, float)):
            msg = f"webhook_time_scale must be a number, got {webhook_time_scale!r}"
            raise TypeError(msg)
        if not (math.isfinite(webhook_time_scale) and webhook_time_scale > 0):
            msg = f"webhook_time_scale must be a finite number > 0, got {webhook_time_scale!r}"
            raise ValueError(msg)
        self._key = key if key is not None else f"{secrets.token_hex(8)}:{secrets.token_hex(16)}"
        self._host = host
        self._port = port
        self._url = ""
        self._faults = FaultQueue()
        self._api = FalApi(
            key=self._key,
            models=dict(models) if models is not None else default_models(),
            concurrency=concurrency,
            latency=latency,
            base_url=lambda: self._url,
            behaviour=behaviour if behaviour is not None else Behaviour(),
        )
        self._webhooks = WebhookDispatcher(self._api.board, self._api.signer, webhook_time_scale, self._api.clock)
        self._api.board.observer = self._webhooks
        self._server: FakeFalServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        state = f"url={self._url!r}" if self._server is not None else "stopped"
        return f"<FakeFal {state} models={len(self._api.models)} key=***>"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeFal:
        """Bind and serve in a background thread (no-op when already started).

        Returns:
            self, for chaining.

        Raises:
            OSError: when the address cannot be bound.
        """
        with self._lifecycle:
            if self._server is not None:
                return self
            server = FakeFalServer((self._host, self._port), self._api, self._faults)
            self._api.board.reopen()
            host, port = server.server_address[:2]
            self._url = f"http://{host!s}:{port}"
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakefal-accept", daemon=True
            )
            self._thread.start()
            self._webhooks.start()
            return self

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread the server started.

        Open status streams end, stalled faults give up, queued jobs stay as they are.
        """
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.shutdown()
            server.server_close()
            self._api.board.close()
            server.close_all()
            if thread is not None:
                thread.join()
            self._webhooks.stop()

    def __enter__(self) -> FakeFal:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- identity -------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``"http://127.0.0.1:54321"``.

        Returns:
            The URL.

        Raises:
            RuntimeError: before ``start()``.
        """
        if not self._url:
            msg = "FakeFal is not started; use `with FakeFal() as fal:` or call start()"
            raise RuntimeError(msg)
        return self._url

    @property
    def key(self) -> str:
        """The API key the emulator accepts (send ``Authorization: Key <key>``).

        Returns:
            The key.
        """
        return self._key

    @property
    def models(self) -> dict[str, FakeModel]:
        """The models served.

        Returns:
            endpoint id -> FakeModel (a copy).
        """
        return dict(self._api.models)

    @property
    def webhook_jwks_url(self) -> str:
        """Where the emulator publishes its webhook public keys (verify deliveries against it).

        Returns:
            ``<url>/.well-known/jwks.json``.

        Raises:
            RuntimeError: before ``start()``.
        """
        return f"{self.url}/.well-known/jwks.json"

    @property
    def webhooks(self) -> WebhookDispatcher:
        """The webhook deliveries: attempts, deliveries, drops, ``wait_idle()``, ``sign()``.

        Returns:
            The dispatcher.
        """
        return self._webhooks

    # -- scripting ------------------------------------------------------------

    def inject(self, route: str, fault: Fault, times: int = 1, model: str | None = None) -> None:
        """Make the next ``times`` requests to ``route`` misbehave; faults are consumed FIFO.

        Args:
            route: ``submit``, ``status``, ``stream``, ``result``, ``cancel``, ``upload``,
                ``pricing``, ``file``, ``run`` (``fal.run``) or ``requests`` (the platform
                requests API, which also takes ``Fault.lag`` and ``Fault.omit``).
            fault: what to do (see ``Fault``).
            times: how many requests it applies to.
            model: only requests about this endpoint id.

        Raises:
            ValueError: for an unknown route or ``times < 1``.
        """
        self._faults.add(route, fault, times, model)

    def clear_faults(self) -> None:
        """Forget every fault not consumed yet, webhook faults included."""
        self._faults.clear()
        self._webhooks.clear_faults()

    def inject_webhook(self, fault: WebhookFault, times: int = 1) -> None:
        """Mishandle the webhook deliveries of the next ``times`` jobs that end; consumed FIFO.

        Args:
            fault: what to do (see ``WebhookFault``).
            times: how many jobs.

        Raises:
            ValueError: when ``times < 1``.
            TypeError: when ``fault`` is not a WebhookFault.
        """
        self._webhooks.inject(fault, times)

    def rotate_webhook_key(self, keep_old: bool = False) -> None:
        """Sign deliveries with a new key from now on, and publish it.

        Args:
            keep_old: keep publishing the previous keys too (fal's grace period);
                by default they are dropped from the JWKS at once.
        """
        self._api.signer.rotate(keep_old)

    def fail_next_jobs(self, n: int, failure: JobFailure, model: str | None = None) -> None:
        """Make the runners of the next ``n`` accepted jobs fail with ``failure`` instead of an output.

        A failure fal's queue retries (503, 504, 429, lost runner) is retried on new
        runners first (see ``Behaviour.server_retries``); with ``failure.attempts``
        left at None every runner fails and the job completes with ``failure``.

        Args:
            n: how many jobs.
            failure: the error.
            model: only jobs of this endpoint id.

        Raises:
            ValueError: when ``n < 1``.
        """
        if n < 1:
            msg = f"n must be >= 1, got {n}"
            raise ValueError(msg)
        self._api.fail_next_jobs(n, failure, model)

    def set_price(self, model_id: str, price: Decimal) -> None:
        """Change a model's unit price (pricing API answers and jobs completing from now on).

        Args:
            model_id: a served endpoint id.
            price: USD per unit.

        Raises:
            KeyError: for a model the emulator does not serve.
        """
        self._api.set_price(model_id, price)

    @property
    def behaviour(self) -> Behaviour:
        """Which of fal's behaviours the emulator reproduces now.

        Returns:
            The behaviour.
        """
        return self._api.behaviour

    def set_behaviour(self, **changes: Any) -> Behaviour:
        """Change some behaviours for jobs and requests from now on.

        Example: ``fal.set_behaviour(cancel="ignored", bill_failed_jobs=True)``.

        Args:
            changes: ``Behaviour`` fields and their new values.

        Returns:
            The new behaviour.

        Raises:
            TypeError: for a field ``Behaviour`` does not have.
            ValueError: for an invalid value.
        """
        behaviour = attrs.evolve(self._api.behaviour, **changes)
        self._api.behaviour = behaviour
        return behaviour

    def set_latency(self, seconds: float, model: str | None = None) -> None:
        """Change the simulated run time of jobs submitted from now on.

        Args:
            seconds: run time once IN_PROGRESS.
            model: one endpoint id, or None for every model.
        """
        self._api.set_latency(seconds, model)

    # -- observations ---------------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """Requests received per route, faulted ones included.

        Returns:
            route -> count, for every route name.
        """
        return self._api.counters.counts()

    @property
    def actions(self) -> dict[str, int]:
        """Requests received per action, a finer count than :attr:`counters` (faulted ones included).

        The ``upload`` route, for one, is ``upload_token`` (a CDN token), ``upload_cdn``
        (``POST /files/upload``), ``multipart_create``, ``multipart_part`` and
        ``multipart_complete`` (storage v3), and ``upload_initiate``, ``upload_put``
        (the legacy storage).

        Returns:
            action -> count, for the actions that arrived since the last ``reset_counters()``.
        """
        return self._api.counters.actions()

    @property
    def submissions(self) -> int:
        """Jobs accepted: queue submits that created a job, and ``fal.run`` calls that took a runner.

        Returns:
            The count since the last ``reset_counters()``.
        """
        with self._api.board.cond:
            return self._api.board.accepted

    @property
    def server_retries(self) -> int:
        """Times fal's queue re-queued a job after its runner failed (each one a new gateway request id).

        Returns:
            The count since start or the last ``reset_counters()``.
        """
        with self._api.board.cond:
            self._api.board.advance_locked(self._api.clock())
            return self._api.board.server_retries

    @property
    def fallbacks(self) -> int:
        """Jobs fal's queue moved to their model's fallback endpoint.

        Returns:
            The count since start or the last ``reset_counters()``.
        """
        with self._api.board.cond:
            self._api.board.advance_locked(self._api.clock())
            return self._api.board.fallbacks

    @property
    def in_flight(self) -> int:
        """Jobs accepted and not yet completed or cancelled, now.

        Returns:
            The count.
        """
        return self._api.board.in_flight

    @property
    def max_in_flight(self) -> int:
        """Most jobs in flight at once since start or the last ``reset_counters()``.

        Returns:
            The high-water mark.
        """
        with self._api.board.cond:
            return self._api.board.max_in_flight

    @property
    def submit_times(self) -> list[float]:
        """``time.monotonic()`` at which each submit request arrived (faulted ones included).

        Returns:
            A list in arrival order.
        """
        return self._api.counters.submit_times()

    @property
    def jobs(self) -> dict[str, JobView]:
        """Every job ever accepted.

        Returns:
            request_id -> read-only JobView, in submission order.
        """
        return self._api.board.views()

    @property
    def billing(self) -> list[BillingRecord]:
        """What the account was charged: one record per billed job.

        Successful jobs are billed; with ``Behaviour.cancel="ignored"`` a cancelled
        job whose model ran on, and with ``Behaviour.bill_failed_jobs`` a failure that
        used GPU time, are billed too (see ``BillingRecord.outcome``).

        Returns:
            Records in completion order.
        """
        board = self._api.board
        with board.cond:
            board.advance_locked(self._api.clock())
            return list(self._api.billing)

    @property
    def billed_total(self) -> Decimal:
        """Sum of every billing record's cost.

        Returns:
            USD, exact.
        """
        return sum((record.cost for record in self.billing), Decimal(0))

    def reset_counters(self) -> None:
        """Zero the request counters, submissions, submit times, server retries, fallbacks; restart ``max_in_flight``.

        Jobs and billing are kept; the webhook attempts and drops are forgotten.
        """
        self._api.counters.reset()
        self._api.board.reset_stats()
        self._webhooks.reset()
