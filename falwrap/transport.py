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

Backup hosts: fal serves its queue and its synchronous host under a second
domain too, in the same request-id space (``queue.falrun.com`` for
``queue.fal.run``, ``falrun.com`` for ``fal.run``), as fal_client knows. When
no connection to the primary can be made (``httpx.ConnectError`` or
``ConnectTimeout``: nothing was sent), the same request goes once to its
backup host within the same budget; the primary's connect timeout is capped
at :data:`PRIMARY_CONNECT_TIMEOUT` so an unreachable host leaves time for the
other. This is not a hidden retry: nothing reached fal the first time, so
nothing can happen twice. A job's status, result and cancel URLs are those fal
answered with, so they follow whichever host took the submission. When the
backup cannot be reached either, the exchange fails with the primary's error,
exactly as without a backup. Under ``base_url`` the backup request goes to the
same origin naming the backup host in ``X-Forwarded-Host``: a proxy should
answer for the backup hosts too.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.cookiejar import CookieJar
from typing import Any

import attrs
import httpx

__all__ = [
    "BACKUP_HOSTS",
    "FAL_HOSTS",
    "FORWARDED_HOST",
    "PRIMARY_CONNECT_TIMEOUT",
    "Budget",
    "DeadlineExceeded",
    "ExchangeError",
    "FalTransport",
    "PinnedBudget",
    "budget",
    "transport_of",
]

logger = logging.getLogger("falwrap")

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

#: fal's backup domain for each host that has one (same services, same request ids).
BACKUP_HOSTS = {"queue.fal.run": "queue.falrun.com", "fal.run": "falrun.com"}

#: Longest wait for a connection to a host that has a backup, seconds (fal_client's own cap).
PRIMARY_CONNECT_TIMEOUT = 5.0

_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout)


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


class _Scope:
    """The ``with`` block of :func:`budget`.

    A class rather than ``@contextmanager``: every exchange enters one, and a
    generator-based context manager costs several times as much.
    """

    __slots__ = ("_token", "_value")

    def __init__(self, value: Budget) -> None:
        self._value = value
        self._token: contextvars.Token[Budget] | None = None

    def __enter__(self) -> Budget:
        self._token = _budget.set(self._value)
        return self._value

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _budget.reset(self._token)


def budget(
    deadline: float | None, per_exchange: float | None, clock: Callable[[], float] = time.monotonic
) -> AbstractContextManager[Budget]:
    """Run the exchanges of the ``with`` block under these limits (this thread/context only)."""
    return _Scope(Budget(deadline, per_exchange, clock))


def current_budget() -> Budget:
    """The limits in force for exchanges made now."""
    return _budget.get()


def _clamp(timeouts: dict[str, Any], limit: float) -> dict[str, Any]:
    return {k: (limit if v is None or v > limit else v) for k, v in timeouts.items()}


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
        """Send one request under the current budget; raise :class:`ExchangeError` on any failure.

        A request for a host with a backup that cannot connect goes once to the backup host.
        """
        limits = _budget.get()
        intended = request.url
        # Never changed in place: each exchange's timeouts are a new dict when they differ.
        given: dict[str, Any] = request.extensions.get("timeout", {})
        backup = BACKUP_HOSTS.get(intended.host)
        self._address(request, intended, self._timeouts(request, given, limits, backup is not None))
        try:
            response = self._inner.handle_request(request)
        except _CONNECT_FAILURES as exc:
            if backup is None:
                raise ExchangeError(request, cause=exc) from exc
            response = self._fail_over(request, intended, backup, given, limits, exc)
        except httpx.TransportError as exc:
            raise ExchangeError(request, cause=exc) from exc
        if response.status_code >= 400 or not request.extensions.get("falwrap_stream", False):
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

    def _address(self, request: httpx.Request, url: httpx.URL, timeouts: dict[str, Any]) -> None:
        """Point ``request`` at where ``url`` really goes, naming ``url``'s host when rerouted."""
        routed = self.route(url)
        # The usual request goes where it was built to go, Host header and all: nothing to change.
        if routed is not request.url:
            request.url = routed
            request.headers["Host"] = routed.netloc.decode("ascii")
            if routed.host != url.host:
                request.headers[FORWARDED_HOST] = url.host
        request.extensions["timeout"] = timeouts

    def _timeouts(
        self, request: httpx.Request, given: dict[str, Any], limits: Budget, has_backup: bool
    ) -> dict[str, Any]:
        """The timeouts of one exchange under ``limits``.

        Raises:
            DeadlineExceeded: no time is left.
        """
        timeouts = given
        stream = request.extensions.get("falwrap_stream", False)
        if stream:
            timeouts = {**timeouts, "read": self._stream_read_timeout}
        if has_backup:
            connect = timeouts.get("connect")
            timeouts = {
                **timeouts,
                "connect": PRIMARY_CONNECT_TIMEOUT if connect is None else min(connect, PRIMARY_CONNECT_TIMEOUT),
            }
        # One clamp by the tighter of the two limits (the exchange's and the deadline's).
        limit = None if stream else limits.per_exchange
        remaining = limits.remaining()
        if remaining is not None:
            if remaining <= 0:
                msg = "the operation's deadline passed"
                raise DeadlineExceeded(msg)
            limit = remaining if limit is None or remaining < limit else limit
        return timeouts if limit is None else _clamp(timeouts, limit)

    def _fail_over(
        self,
        request: httpx.Request,
        intended: httpx.URL,
        backup: str,
        given: dict[str, Any],
        limits: Budget,
        cause: httpx.TransportError,
    ) -> httpx.Response:
        """Send ``request``, which could not connect to ``intended``'s host, to the ``backup`` host instead.

        The request is changed in place, so the response (and anything httpx builds
        from it, such as a redirect) names the host that answered.

        Raises:
            ExchangeError: the backup failed; a connection failure there reports the primary's.
            DeadlineExceeded: no time was left for the backup.
        """
        primary_timeouts = request.extensions["timeout"]
        logger.warning(
            "[falwrap] could not connect to %s (%s); sending %s %s to its backup host %s",
            intended.host, type(cause).__name__, request.method, intended.path, backup,
        )  # fmt: skip
        self._address(request, intended.copy_with(host=backup), self._timeouts(request, given, limits, False))
        try:
            return self._inner.handle_request(request)
        except _CONNECT_FAILURES as exc:
            self._address(request, intended, primary_timeouts)
            raise ExchangeError(request, cause=cause) from exc
        except httpx.TransportError as exc:
            raise ExchangeError(request, cause=exc) from exc

    def close(self) -> None:
        """Close the connection pool."""
        self._inner.close()


class PinnedBudget(httpx.BaseTransport):
    """A view of a :class:`FalTransport` that runs every exchange under one fixed budget.

    For clients whose requests are sent from threads the caller does not own
    (fal_client's multipart upload sends its parts from a thread pool), where
    the context variable that carries the caller's budget is not set. Closing
    it leaves the shared connection pool open.

    Args:
        transport: The client's transport.
        limits: The budget every exchange through this view runs under.
    """

    def __init__(self, transport: httpx.BaseTransport, limits: Budget) -> None:
        self._transport = transport
        self._limits = limits

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request under the pinned budget."""
        token = _budget.set(self._limits)
        try:
            return self._transport.handle_request(request)
        finally:
            _budget.reset(token)

    def close(self) -> None:
        """Nothing to close: the pool belongs to the client the transport came from."""


def transport_of(http: httpx.Client) -> FalTransport:
    """The :class:`FalTransport` under a client made by :func:`build_http_client`.

    Raises:
        TypeError: ``http`` was not made by :func:`build_http_client`.
    """
    transport = http._transport  # httpx has no public accessor for a client's transport
    if not isinstance(transport, FalTransport):
        msg = f"expected an httpx.Client on a FalTransport, got one on {type(transport).__name__}"
        raise TypeError(msg)
    return transport


class _Cookies(httpx.Cookies):
    """httpx's cookie store, which looks at a response only when it sets a cookie.

    httpx hands every response to its cookie jar, building a ``urllib`` request
    and response around it first; for the three or more answers of every job
    (none of which sets a cookie: fal authenticates by key) that is more CPU
    than falwrap's own bookkeeping of the call. A response that does set one is
    stored exactly as before.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        """Store the cookies ``response`` sets, if it sets any."""
        if response.headers.get_list("set-cookie"):
            super().extract_cookies(response)


class _Client(httpx.Client):
    """The ``httpx.Client`` falwrap shares with fal_client: httpx's, with :class:`_Cookies` as its store."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _Cookies(kwargs.get("cookies"))

    @property
    def cookies(self) -> httpx.Cookies:
        """The cookies the client keeps (see :class:`_Cookies`)."""
        return self._jar

    @cookies.setter
    def cookies(self, cookies: httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]) -> None:
        self._jar = _Cookies(cookies)


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
    return _Client(
        transport=transport,
        headers={"Authorization": f"Key {api_key}", "User-Agent": user_agent},
        timeout=httpx.Timeout(120.0, connect=10.0),
        follow_redirects=True,
    )
