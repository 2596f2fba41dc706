"""The one HTTP seam under fal_client: routing, per-exchange timeouts, and no hidden retries.

falwrap hands ``fal_client`` an ``httpx.Client`` built on :class:`FalTransport`.
Every exchange with fal passes through it, which lets falwrap keep three
promises that fal_client cannot:

* ``base_url``: requests for any fal host go to that URL instead, path and
  query unchanged, naming the fal host they were meant for in
  ``X-Forwarded-Host`` (the emulator, tests, corporate proxies: one origin,
  fal's hosts still told apart; see docs/testing.md).
* Deadlines: each exchange's timeouts are clamped to the per-exchange limit
  and to the time left before the operation's deadline (a context variable
  set by the client), so a stalled server cannot hold a call past it.
* No hidden retries: fal_client retries transport errors and some statuses up
  to ten times on its own, ignoring ``Retry-After`` and re-sending the submit
  POST. The transport raises :class:`ExchangeError` for every failed exchange
  instead; it is not an ``httpx.HTTPError``, so fal_client's retry loop lets
  it through untouched and falwrap's own policy decides.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import httpx

__all__ = ["FAL_HOSTS", "FORWARDED_HOST", "Budget", "DeadlineExceeded", "ExchangeError", "FalTransport", "budget"]

#: The header naming the fal host a rerouted request was meant for.
FORWARDED_HOST = "X-Forwarded-Host"

#: Hosts fal_client and falwrap talk to; all are rerouted when ``base_url`` is set.
FAL_HOSTS = frozenset(
    {
        "queue.fal.run",
        "fal.run",
        "queue.falrun.com",
        "falrun.com",
        "rest.fal.ai",
        "rest.alpha.fal.ai",
        "api.fal.ai",
        "v3.fal.media",
        "v3b.fal.media",
        "fal.media",
    }
)


class ExchangeError(Exception):
    """One HTTP exchange failed: an error status, or no usable answer at all.

    Deliberately not an ``httpx.HTTPError``: see the module docstring.

    Attributes:
        request: The request sent (or attempted).
        response: The error response, body read, or ``None`` when none came back.
        cause: The transport exception when no response came back.
        sent: Whether the request may have reached the server (``False`` only
            when the connection was never established).
    """

    def __init__(
        self,
        request: httpx.Request,
        *,
        response: httpx.Response | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self.request = request
        self.response = response
        self.cause = cause
        self.sent = not isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        what = f"HTTP {response.status_code}" if response is not None else type(cause).__name__
        super().__init__(f"{request.method} {request.url.path}: {what}")

    @property
    def timed_out(self) -> bool:
        """True when no answer came back in time."""
        return isinstance(self.cause, httpx.TimeoutException)


class DeadlineExceeded(Exception):
    """The operation's deadline passed before an exchange could start."""


@attrs.frozen
class Budget:
    """Time limits for the exchanges made in one context.

    Args:
        deadline: ``clock()`` value after which no exchange may run, or ``None``.
        per_exchange: Upper bound of any single exchange, seconds, or ``None``.
        clock: The monotonic clock ``deadline`` is measured on (the caller's, so an
            injected test clock and the transport agree).
    """

    deadline: float | None = None
    per_exchange: float | None = None
    clock: Callable[[], float] = time.monotonic

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or ``None`` without one."""
        return None if self.deadline is None else self.deadline - self.clock()


_NO_LIMITS = Budget()
_budget: contextvars.ContextVar[Budget] = contextvars.ContextVar("falwrap_budget", default=_NO_LIMITS)


@contextmanager
def budget(
    deadline: float | None, per_exchange: float | None, clock: Callable[[], float] = time.monotonic
) -> Iterator[Budget]:
    """Run the exchanges of the ``with`` block under these limits (this thread/context only)."""
    value = Budget(deadline, per_exchange, clock)
    token = _budget.set(value)
    try:
        yield value
    finally:
        _budget.reset(token)


def current_budget() -> Budget:
    """The limits in force for exchanges made now."""
    return _budget.get()


def _clamp(timeouts: dict[str, Any], limit: float) -> dict[str, Any]:
    return {k: (limit if v is None else min(v, limit)) for k, v in timeouts.items()}


class FalTransport(httpx.BaseTransport):
    """An httpx transport that reroutes fal hosts and turns failures into :class:`ExchangeError`.

    Thread-safe: it holds no per-request state; limits come from a context variable.

    Args:
        base_url: Where fal-host requests go instead (``None``: the real hosts).
        inner: The transport that does the I/O (one connection pool for the client).
        stream_read_timeout: Read timeout for status streams: longer than fal's
            keep-alive interval (10 s) so a healthy idle stream is not cut.
    """

    def __init__(
        self,
        base_url: str | None,
        inner: httpx.BaseTransport,
        *,
        stream_read_timeout: float = 15.0,
    ) -> None:
        self._inner = inner
        self._stream_read_timeout = stream_read_timeout
        # Kept as text: joining strings and parsing once is half the cost of URL.copy_with.
        self._prefix: str | None = str(httpx.URL(base_url)).rstrip("/") if base_url else None

    def route(self, url: httpx.URL) -> httpx.URL:
        """Where a request for ``url`` really goes."""
        prefix = self._prefix
        if prefix is None or url.host not in FAL_HOSTS:
            return url
        return httpx.URL(prefix + url.raw_path.decode("ascii"))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request under the current budget; raise :class:`ExchangeError` on any failure."""
        limits = _budget.get()
        original = request.url.host
        request.url = self.route(request.url)
        if request.url.host != original:
            request.headers[FORWARDED_HOST] = original
        if request.url.host != request.headers.get("host"):
            request.headers["Host"] = request.url.netloc.decode("ascii")
        timeouts: dict[str, Any] = dict(request.extensions.get("timeout", {}))
        if request.extensions.get("falwrap_stream"):
            timeouts["read"] = self._stream_read_timeout
        elif limits.per_exchange is not None:
            timeouts = _clamp(timeouts, limits.per_exchange)
        remaining = limits.remaining()
        if remaining is not None:
            if remaining <= 0:
                msg = "the operation's deadline passed"
                raise DeadlineExceeded(msg)
            timeouts = _clamp(timeouts, remaining)
        request.extensions["timeout"] = timeouts
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError as exc:
            raise ExchangeError(request, cause=exc) from exc
        if response.status_code >= 400 or not request.extensions.get("falwrap_stream"):
            # Read the body here, not in httpx.Client: a connection cut mid-body must
            # also become an ExchangeError, or fal_client would catch and retry it.
            try:
                response.read()
            except httpx.TransportError as exc:
                raise ExchangeError(request, cause=exc) from exc
            finally:
                response.close()
        if response.status_code >= 400:
            raise ExchangeError(request, response=response)
        return response

    def close(self) -> None:
        """Close the connection pool."""
        self._inner.close()


def build_http_client(
    *,
    api_key: str,
    base_url: str | None,
    max_connections: int,
    user_agent: str,
    stream_read_timeout: float = 15.0,
) -> httpx.Client:
    """The one ``httpx.Client`` (one connection pool) a FalClient and its fal_client share."""
    pool = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    inner = httpx.HTTPTransport(limits=pool, retries=0)
    transport = FalTransport(base_url, inner, stream_read_timeout=stream_read_timeout)
    return httpx.Client(
        transport=transport,
        headers={"Authorization": f"Key {api_key}", "User-Agent": user_agent},
        timeout=httpx.Timeout(120.0, connect=10.0),
        follow_redirects=True,
    )
