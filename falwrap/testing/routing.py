"""An httpx transport that sends fal's hosts to a FakeFal, for clients falwrap does not wrap.

Point the official ``fal_client`` (or any httpx-based code) at the emulator
without touching its code or module globals: hand its ``httpx.Client`` this
transport. Unlike falwrap's own transport it changes nothing else, so the
client under test keeps its own retries and error handling.
"""

from __future__ import annotations

import httpx

from falwrap.transport import FAL_HOSTS

__all__ = ["RouteToFakeFal"]


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
        if request.url.host in FAL_HOSTS:
            target = self._target
            request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
            request.headers["Host"] = target.netloc.decode("ascii")
        return self._inner.handle_request(request)

    def close(self) -> None:
        """Close the connection pool."""
        self._inner.close()
