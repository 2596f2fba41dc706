"""An httpx transport that sends fal's hosts to a FakeFal, for clients falwrap does not wrap.

Point the official ``fal_client`` (or any httpx-based code) at the emulator
without touching its code or module globals: hand its ``httpx.Client`` this
transport. Unlike falwrap's own transport it changes nothing else, so the
client under test keeps its own retries and error handling.

A rerouted request keeps its path and query, and names the fal host it was
meant for in ``X-Forwarded-Host``, which is how the emulator tells the queue
(``queue.fal.run``) from the synchronous host (``fal.run``), storage
(``rest.fal.ai``), the platform API (``api.fal.ai``) and the CDN
(``v3.fal.media``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx

from falwrap.testing.hosts import HOSTS

__all__ = ["FORWARDED_HOST_HEADER", "RouteToFakeFal"]

#: The header carrying the fal host a rerouted request was meant for.
FORWARDED_HOST_HEADER = "X-Forwarded-Host"

_install_lock = threading.Lock()


def _reroute(request: httpx.Request, target: httpx.URL) -> None:
    """Point a request for one of fal's hosts at ``target``, path and query unchanged.

    Args:
        request: the request (changed in place); other hosts are left alone.
        target: the emulator's URL.
    """
    host = request.url.host
    if host not in HOSTS:
        return
    request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
    request.headers["Host"] = target.netloc.decode("ascii")
    request.headers[FORWARDED_HOST_HEADER] = host


class RouteToFakeFal(httpx.BaseTransport):
    """Sends requests for fal's hosts to the emulator at ``target``, path and query unchanged.

    Thread-safe (it keeps no per-request state).

    Args:
        target: The emulator's URL, e.g. ``FakeFal().url``.
        max_connections: Pool size (httpx's default is 100).
    """

    def __init__(self, target: str, max_connections: int = 100) -> None:
        self._target = httpx.URL(target)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._inner = httpx.HTTPTransport(limits=limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Rewrite a fal host to the emulator, then send."""
        _reroute(request, self._target)
        return self._inner.handle_request(request)

    def close(self) -> None:
        """Close the connection pool."""
        self._inner.close()

    @classmethod
    @contextlib.contextmanager
    def installed(cls, target: str) -> Iterator[None]:
        """Reroute fal's hosts to ``target`` in every httpx client of the process while the block runs.

        For code that builds its own httpx clients where no transport can be handed
        in, such as ``fal_client``'s CDN upload: ``with RouteToFakeFal.installed(fal.url):
        fal_client.SyncClient(key=fal.key).upload(...)``.  httpx's own transports are
        wrapped for the block (sync and async) and restored after it; requests to
        other hosts pass unchanged.  Blocks may not nest.

        Args:
            target: The emulator's URL.

        Yields:
            Nothing; leave the block to restore httpx.

        Raises:
            RuntimeError: when a block is already active.
        """
        destination = httpx.URL(target)
        if not _install_lock.acquire(blocking=False):
            msg = "RouteToFakeFal.installed() is already active; blocks may not nest"
            raise RuntimeError(msg)
        sync_send = httpx.HTTPTransport.handle_request
        async_send = httpx.AsyncHTTPTransport.handle_async_request

        def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            _reroute(request, destination)
            return sync_send(self, request)

        async def handle_async_request(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
            _reroute(request, destination)
            return await async_send(self, request)

        try:
            httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]
            httpx.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]
            yield
        finally:
            httpx.HTTPTransport.handle_request = sync_send  # type: ignore[method-assign]
            httpx.AsyncHTTPTransport.handle_async_request = async_send  # type: ignore[method-assign]
            _install_lock.release()
