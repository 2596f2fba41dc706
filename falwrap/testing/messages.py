"""Plain values passed between the HTTP server and the emulated API: requests, responses, streams."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

__all__ = ["EventStream", "Request", "Response", "json_response"]


@attrs.frozen
class Request:
    """One parsed HTTP request.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: the URL path, percent-decoded.
        query: query parameters (each may repeat).
        headers: header names lower-cased.
        body: the raw body.
    """

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def param(self, name: str) -> str | None:
        """The first value of a query parameter.

        Args:
            name: the parameter.

        Returns:
            Its value, or None when absent.
        """
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body parsed as JSON (an empty body is ``{}``).

        Returns:
            The parsed value.

        Raises:
            ValueError: when the body is not JSON.
        """
        return json.loads(self.body) if self.body.strip() else {}


@attrs.frozen
class Response:
    """A complete response; the server always sends ``Content-Length``."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class EventStream:
    """A ``text/event-stream`` response sent with chunked encoding.

    Attributes:
        chunks: yields each piece of the body; ends when the stream is complete.
        headers: extra headers.
    """

    chunks: Callable[[], Iterator[bytes]]
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | list[tuple[str, str]] | None = None
) -> Response:
    """A JSON response.

    Args:
        status: the status code.
        payload: a JSON-serialisable value.
        headers: extra headers.

    Returns:
        The response with ``Content-Type: application/json``.
    """
    extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    return Response(
        status, json.dumps(payload, separators=(",", ":")).encode(), (("Content-Type", "application/json"), *extra)
    )
