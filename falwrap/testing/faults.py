"""Scripted faults: what FakeFal does instead of (or after) answering a request normally."""

from __future__ import annotations

import json as _json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal

import attrs

__all__ = ["ROUTES", "Fault", "FaultQueue"]

#: Route names used by ``FakeFal.inject`` and ``FakeFal.counters``.
ROUTES = ("submit", "status", "stream", "result", "cancel", "upload", "pricing", "file", "jwks", "run", "requests")

FaultKind = Literal["http", "reset", "stall", "malformed_json", "cut", "lag", "omit"]

#: Faults that change what the platform requests API lists instead of how the request fails.
_REQUESTS_ONLY = frozenset({"lag", "omit"})

_NGINX_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _pairs(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (headers or {}).items())


@attrs.frozen
class Fault:
    """One scripted misbehaviour of the emulator; build it with the class methods.

    By default the fault replaces the request: the emulator does no work (a
    faulted submit creates no job).  ``Fault.after(fault)`` makes the server do
    the work first — a submit is accepted and counted — and then lose the
    response to the fault, which is how a client ends up not knowing that it
    already paid.

    Attributes:
        kind: ``"http"``, ``"reset"``, ``"stall"``, ``"malformed_json"``, ``"cut"``,
            ``"lag"`` or ``"omit"``.
        status: HTTP status for ``http`` and ``malformed_json``.
        body: response body bytes for ``http``.
        headers: response headers for ``http``.
        seconds: how long a ``stall`` sends nothing; for ``lag``, how long a new job stays unlisted.
        then: after a stall, ``"close"`` the connection or ``"respond"`` normally.
        after_processing: handle the request normally first, then apply the fault.
        events: for ``cut``, how many status events the stream delivers before the connection drops.
        request_ids: for ``omit``, the jobs the requests API leaves out.
    """

    kind: FaultKind
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    then: Literal["close", "respond"] = "close"
    after_processing: bool = False
    events: int = 0
    request_ids: tuple[str, ...] = ()

    @classmethod
    def http(
        cls,
        status: int,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with an arbitrary HTTP response.

        Args:
            status: the status code.
            json: a JSON-serialisable body (sets ``Content-Type: application/json``).
            body: raw body bytes or text, used when ``json`` is None.
            headers: extra headers.

        Returns:
            The fault.  With neither ``json`` nor ``body`` the body is ``{"detail": <reason>}``.
        """
        extra = _pairs(headers)
        if json is None and body is None:
            json = {"detail": _reason(status)}
        if json is not None:
            raw = _json.dumps(json).encode()
            extra = (("Content-Type", "application/json"), *extra)
        else:
            raw = body.encode() if isinstance(body, str) else (body or b"")
        return cls(kind="http", status=status, body=raw, headers=extra)

    @classmethod
    def request_error(cls, status: int, error_type: str, detail: str | None = None) -> Fault:
        """fal's infrastructure error: flat ``{detail, error_type}``, ``X-Fal-Error-Type``, ``x-fal-request-id``.

        Args:
            status: e.g. 503 for ``runner_scheduling_failure``, 504 for ``request_timeout``.
            error_type: fal's request error type.
            detail: the message; defaults to the type in words.

        Returns:
            The fault.
        """
        text = detail if detail is not None else error_type.replace("_", " ").capitalize()
        return cls.http(
            status,
            json={"detail": text, "error_type": error_type},
            headers={"X-Fal-Error-Type": error_type, "x-fal-request-id": str(uuid.uuid4())},
        )

    @classmethod
    def nginx(cls, status: int = 502) -> Fault:
        """An ingress error: nginx's HTML page and no ``x-fal-request-id`` (fal-client retries these).

        Args:
            status: 502, 503 or 504 usually.

        Returns:
            The fault.
        """
        page = _NGINX_PAGE.format(status=status, reason=_reason(status))
        return cls.http(status, body=page, headers={"Content-Type": "text/html"})

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Fault:
        """A 429, with ``Retry-After`` (seconds) when given.

        Args:
            retry_after: value of the ``Retry-After`` header; None leaves it out.

        Returns:
            The fault.
        """
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls.http(429, json={"detail": "Rate limit exceeded"}, headers=headers)

    @classmethod
    def validation(
        cls,
        loc: Sequence[str | int],
        msg: str,
        type: str,
        ctx: Mapping[str, Any] | None = None,
        retryable: bool = False,
    ) -> Fault:
        """A 422 with fal's model-error ``detail`` list and ``X-Fal-Retryable``.

        Args:
            loc: where the error is, e.g. ``("body", "prompt")``.
            msg: the message.
            type: fal's error type, e.g. ``"content_policy_violation"``.
            ctx: extra context (e.g. ``{"max_width": 1024}``).
            retryable: value of ``X-Fal-Retryable``.

        Returns:
            The fault.
        """
        entry = {
            "loc": list(loc),
            "msg": msg,
            "type": type,
            "url": f"https://docs.fal.ai/errors#{type}",
            "ctx": dict(ctx or {}),
        }
        return cls.http(
            422,
            json={"detail": [entry]},
            headers={"X-Fal-Retryable": "true" if retryable else "false", "x-fal-request-id": str(uuid.uuid4())},
        )

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection with a TCP reset and no response.

        Returns:
            The fault.
        """
        return cls(kind="reset")

    @classmethod
    def stall(cls, seconds: float, then: Literal["close", "respond"] = "close") -> Fault:
        """Send nothing for ``seconds``, then close the connection or answer normally.

        The request is only handled after the stall (with ``then="respond"``), so a
        client that gives up first leaves no job behind; wrap it in ``Fault.after``
        to do the work first and stall the answer.

        Args:
            seconds: how long to stay silent.
            then: ``"close"`` (no response at all) or ``"respond"``.

        Returns:
            The fault.
        """
        return cls(kind="stall", seconds=float(seconds), then=then)

    @classmethod
    def malformed_json(cls, status: int = 200) -> Fault:
        """A response declared as JSON whose body is cut off mid-object.

        Args:
            status: the status code.

        Returns:
            The fault.
        """
        return cls(
            kind="malformed_json",
            status=status,
            body=b'{"status": "IN_QUEUE", "request_id": "',
            headers=(("Content-Type", "application/json"),),
        )

    @classmethod
    def cut_after(cls, events: int) -> Fault:
        """A status stream that delivers ``events`` status events, then loses its connection mid-job.

        Only for the ``stream`` route. The stream is answered normally (200,
        ``text/event-stream``); after the ``events``-th ``data:`` event the server
        closes the connection without ending the chunked body, as a proxy that
        drops a long-lived connection does. Keep-alive comments are not counted.
        A job that completes within ``events`` events gets its whole stream, and
        an error answer (an unknown request's 404) is sent whole.

        Args:
            events: status events sent before the cut (0: the stream opens, then drops).

        Returns:
            The fault.

        Raises:
            ValueError: when ``events < 0``.
        """
        if events < 0:
            msg = f"events must be >= 0, got {events}"
            raise ValueError(msg)
        return cls(kind="cut", events=events, after_processing=True)

    @classmethod
    def lag(cls, seconds: float) -> Fault:
        """The platform requests API is behind: jobs submitted in the last ``seconds`` are not listed yet.

        Only for the ``requests`` route.

        Args:
            seconds: how far behind the listing is.

        Returns:
            The fault.

        Raises:
            ValueError: when ``seconds`` is negative or not finite.
        """
        if not 0 <= seconds < float("inf"):
            msg = f"seconds must be a finite number >= 0, got {seconds!r}"
            raise ValueError(msg)
        return cls(kind="lag", seconds=float(seconds))

    @classmethod
    def omit(cls, *request_ids: str) -> Fault:
        """The platform requests API leaves these jobs out of its answer, as if it lacked them.

        Only for the ``requests`` route.

        Args:
            request_ids: the jobs to leave out.

        Returns:
            The fault.
        """
        return cls(kind="omit", request_ids=tuple(request_ids))

    @classmethod
    def after(cls, fault: Fault) -> Fault:
        """The same fault applied after the server handled the request.

        ``FakeFal.inject("submit", Fault.after(Fault.reset()))`` accepts and counts
        the job, then resets the connection: the response is lost.

        Args:
            fault: any fault.

        Returns:
            A copy with ``after_processing=True``.
        """
        return attrs.evolve(fault, after_processing=True)


@attrs.define
class _Entry:
    fault: Fault
    remaining: int
    model: str | None


@attrs.define
class FaultQueue:
    """FIFO of scripted faults per route; thread-safe."""

    _entries: dict[str, list[_Entry]] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def add(self, route: str, fault: Fault, times: int = 1, model: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``route``.

        Args:
            route: one of ``ROUTES``.
            fault: what to do.
            times: how many requests it applies to.
            model: only requests for this endpoint id (None: any request).

        Raises:
            ValueError: for an unknown route, ``times < 1``, a ``cut`` fault on a route other than
                ``stream``, or a ``lag`` or ``omit`` fault on one other than ``requests``.
        """
        if route not in ROUTES:
            msg = f"unknown route {route!r}; expected one of {', '.join(ROUTES)}"
            raise ValueError(msg)
        if fault.kind == "cut" and route != "stream":
            msg = f"Fault.cut_after only applies to the 'stream' route, not {route!r}"
            raise ValueError(msg)
        if fault.kind in _REQUESTS_ONLY and route != "requests":
            msg = f"Fault.{fault.kind} only applies to the 'requests' route, not {route!r}"
            raise ValueError(msg)
        if times < 1:
            msg = f"times must be >= 1, got {times}"
            raise ValueError(msg)
        with self._lock:
            self._entries.setdefault(route, []).append(_Entry(fault, times, model))

    def take(self, route: str, model_of: Callable[[], str | None]) -> Fault | None:
        """Consume the first queued fault that applies to this request.

        Args:
            route: the request's route.
            model_of: returns the endpoint id the request is about, when known; only
                called when a fault is queued for the route (it may need a job lookup).

        Returns:
            The fault, or None to handle the request normally.
        """
        with self._lock:
            entries = self._entries.get(route)
            if not entries:
                return None
            model = model_of() if any(entry.model is not None for entry in entries) else None
            for index, entry in enumerate(entries):
                if entry.model is None or _same_model(entry.model, model):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        del entries[index]
                    return entry.fault
            return None

    def clear(self) -> None:
        """Forget every queued fault."""
        with self._lock:
            self._entries.clear()


def _same_model(wanted: str, actual: str | None) -> bool:
    # A sub-path endpoint ("fal-ai/flux/dev/redux") still belongs to its model.
    return actual is not None and (actual == wanted or actual.startswith(wanted + "/"))
