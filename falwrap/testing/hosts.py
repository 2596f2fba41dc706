"""Which of fal's hosts a request was meant for, and which route of that host it is.

FakeFal serves every fal host on one origin.  A client rerouted to it keeps
the path and names the fal host it meant in ``X-Forwarded-Host`` (what
``RouteToFakeFal`` sends): ``queue.fal.run`` (the queue), ``fal.run`` (runs a
model and answers with its output), ``rest.fal.ai`` (storage; as
``rest.alpha.fal.ai`` also the webhook keys), ``api.fal.ai`` (platform API)
and ``v3.fal.media`` (CDN).  Without that header the host is guessed from the
path, the way a client pointed straight at FakeFal uses it: a POST to a model
path is then a queue submission.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["HOSTS", "Route", "classify", "host_kind"]

HostKind = Literal["queue", "run", "rest", "api", "cdn"]

#: fal's public hosts (and fal_client's backup domains) by what they serve.
HOSTS: dict[str, HostKind] = {
    "queue.fal.run": "queue",
    "queue.falrun.com": "queue",
    "fal.run": "run",
    "falrun.com": "run",
    "rest.fal.ai": "rest",
    "rest.alpha.fal.ai": "rest",
    "api.fal.ai": "api",
    "v3.fal.media": "cdn",
    "v3b.fal.media": "cdn",
    "fal.media": "cdn",
}


@attrs.frozen
class Route:
    """Which route a request is, and what it is about.

    Attributes:
        name: a counter/fault route name, or ``"unknown"``.
        action: the handler to run (a finer name than ``name``, e.g. ``upload_put``).
        app: ``owner/alias`` (queue routes) or the endpoint id (submit, run).
        request_id: for status, stream, result and cancel.
        tail: the file name for file and storage routes; the upload id and part for multipart.
    """

    name: str
    action: str
    app: str = ""
    request_id: str = ""
    tail: str = ""


_UNKNOWN = Route("unknown", "unknown")


def host_kind(host: str | None) -> HostKind | None:
    """What a forwarded host serves.

    Args:
        host: the ``X-Forwarded-Host`` value (a port is ignored), or None.

    Returns:
        The kind of fal host, or None for an absent or unknown host.
    """
    if not host:
        return None
    return HOSTS.get(host.split(":", 1)[0].strip().lower())


def _queue_route(method: str, segs: list[str]) -> Route:
    if "requests" in segs[2:]:
        index = segs.index("requests", 2)
        app, rest = "/".join(segs[:index]), segs[index + 1 :]
        if method == "GET" and len(rest) == 1:
            return Route("result", "result", app, rest[0])
        if method == "GET" and rest[1:] == ["status"]:
            return Route("status", "status", app, rest[0])
        if method == "GET" and rest[1:] == ["status", "stream"]:
            return Route("stream", "stream", app, rest[0])
        if method == "PUT" and rest[1:] == ["cancel"]:
            return Route("cancel", "cancel", app, rest[0])
        return _UNKNOWN
    if method == "POST" and len(segs) >= 2:
        if len(segs) >= 3 and segs[-1] == "stream":
            return Route("submit", "submit_stream", "/".join(segs[:-1]))
        return Route("submit", "submit", "/".join(segs))
    return _UNKNOWN


def _run_route(method: str, segs: list[str]) -> Route:
    if method != "POST" or len(segs) < 2:
        return _UNKNOWN
    if len(segs) >= 3 and segs[-1] == "stream":
        return Route("run", "run_stream", "/".join(segs[:-1]))
    return Route("run", "run", "/".join(segs))


def _rest_route(method: str, segs: list[str]) -> Route:
    if method == "GET" and segs == [".well-known", "jwks.json"]:
        return Route("jwks", "jwks")
    if segs[:1] != ["storage"]:
        return _UNKNOWN
    rest = segs[1:]
    if method == "POST" and rest == ["upload", "initiate"]:
        return Route("upload", "upload_initiate")
    if method == "POST" and rest == ["upload", "initiate-multipart"]:
        return Route("upload", "upload_initiate_multipart")
    if method == "PUT" and rest[:2] == ["upload", "put"] and len(rest) == 3:
        return Route("upload", "upload_put", tail=rest[2])
    if method == "POST" and rest == ["auth", "token"]:
        return Route("upload", "upload_token")
    return _UNKNOWN


def _api_route(method: str, segs: list[str]) -> Route:
    if method == "GET" and segs == ["v1", "models", "pricing"]:
        return Route("pricing", "pricing")
    if method == "GET" and segs == ["v1", "models", "requests", "by-endpoint"]:
        return Route("requests", "requests")
    return _UNKNOWN


def _cdn_route(method: str, segs: list[str]) -> Route:
    if segs[:1] != ["files"] or len(segs) < 2:
        return _UNKNOWN
    rest = segs[1:]
    if method == "POST" and rest == ["upload"]:
        return Route("upload", "upload_cdn")
    if method == "POST" and rest == ["upload", "multipart"]:
        return Route("upload", "multipart_create")
    if len(rest) == 4 and rest[1] == "multipart":
        name, upload_id, part = rest[0], rest[2], rest[3]
        if method == "PUT" and part.isdigit():
            return Route("upload", "multipart_part", request_id=upload_id, tail=f"{name}/{part}")
        if method == "POST" and part == "complete":
            return Route("upload", "multipart_complete", request_id=upload_id, tail=name)
        return _UNKNOWN
    if method in ("GET", "HEAD") and len(rest) == 1:
        return Route("file", "file", tail=rest[0])
    return _UNKNOWN


_BY_KIND = {"queue": _queue_route, "run": _run_route, "rest": _rest_route, "api": _api_route, "cdn": _cdn_route}


def _guess(method: str, segs: list[str]) -> Route:
    if segs[0] == "files":
        return _cdn_route(method, segs)
    if segs[0] in ("storage", ".well-known"):
        return _rest_route(method, segs)
    if segs[0] == "v1":
        return _api_route(method, segs)
    return _queue_route(method, segs)


def classify(method: str, path: str, host: str | None = None) -> Route:
    """Map a method, path and the fal host it was meant for to a route.

    Args:
        method: the HTTP method (HEAD is classified as GET by the caller).
        path: the URL path.
        host: the ``X-Forwarded-Host`` header, when the request was rerouted.

    Returns:
        The route; ``Route("unknown", "unknown")`` for anything fal does not serve there.
    """
    segs = [s for s in path.split("/") if s]
    if not segs:
        return _UNKNOWN
    kind = host_kind(host)
    if kind is None:
        return _guess(method, segs)
    return _BY_KIND[kind](method, segs)
