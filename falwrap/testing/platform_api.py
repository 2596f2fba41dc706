"""fal's platform API as the emulator answers it: model pricing and the requests of an endpoint."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from falwrap.testing.faults import Fault
from falwrap.testing.hosts import Route
from falwrap.testing.jobs import Job
from falwrap.testing.messages import Request, Response, json_response

if TYPE_CHECKING:
    from falwrap.testing.api import FalApi

__all__ = ["FAL_PRICE_UNITS", "MAX_PRICING_IDS", "MAX_REQUESTS_LIMIT", "handlers", "platform_error"]

#: fal's platform API accepts 1..50 endpoint ids per pricing request.
MAX_PRICING_IDS = 50

#: Most requests one page of the requests API lists.
MAX_REQUESTS_LIMIT = 100

#: Requests listed per page when ``limit`` is not given.
DEFAULT_REQUESTS_LIMIT = 50

#: The pricing API's ``unit`` for each billing unit, as fal writes it (a model may override it).
FAL_PRICE_UNITS = {
    "megapixel": "megapixels",
    "image": "image",
    "second": "video_second",
    "video": "video",
    "compute_second": "compute_second",
}

#: FakeFal's own unit names (``Behaviour(price_units="plain")``).
_PLAIN_PRICE_UNITS = {
    "megapixel": "megapixels",
    "image": "image",
    "second": "seconds",
    "video": "video",
    "compute_second": "compute seconds",
}

_STATUS_FILTERS = ("success", "error", "user_error")


def platform_error(status: int, error_type: str, message: str) -> Response:
    """An error in the platform API's ``{"error": {type, message, docs_url, request_id}}`` shape.

    Args:
        status: the HTTP status.
        error_type: e.g. ``validation_error``.
        message: what went wrong.

    Returns:
        The response.
    """
    error = {
        "type": error_type,
        "message": message,
        "docs_url": "https://docs.fal.ai/platform-apis/v1/errors",
        "request_id": str(uuid.uuid4()),
    }
    return json_response(status, {"error": error})


def _endpoint_ids(request: Request) -> list[str]:
    return [part.strip() for value in request.query.get("endpoint_id", []) for part in value.split(",") if part.strip()]


def _pricing(api: FalApi, route: Route, request: Request, shaping: Fault | None) -> Response:
    ids = _endpoint_ids(request)
    if not ids:
        return platform_error(400, "validation_error", "endpoint_id is required (1 to 50 ids).")
    if len(ids) > MAX_PRICING_IDS:
        return platform_error(400, "validation_error", f"At most {MAX_PRICING_IDS} endpoint_id values are allowed.")
    unknown = [endpoint for endpoint in ids if endpoint not in api.models]
    if unknown:
        return platform_error(404, "not_found", f"Endpoint(s) not found: {', '.join(unknown)}")
    plain = api.behaviour.price_units == "plain"
    prices = []
    for endpoint in ids:
        model = api.models[endpoint]
        unit = _PLAIN_PRICE_UNITS[model.unit] if plain else model.price_unit or FAL_PRICE_UNITS[model.unit]
        prices.append(
            {"endpoint_id": endpoint, "unit_price": float(api.price_of(model)), "unit": unit, "currency": "USD"}
        )
    return json_response(200, {"prices": prices, "next_cursor": None, "has_more": False})


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode("ascii")


def _read_cursor(text: str) -> int:
    decoded = base64.urlsafe_b64decode(text.encode("ascii")).decode("ascii")
    if not decoded.startswith("seq:"):
        raise ValueError(decoded)
    return int(decoded[4:])


def _status_code(job: Job) -> int | None:
    if job.state != "COMPLETED":
        return None
    error = job.error
    return 200 if error is None else error.status


def _status_class(code: int) -> str:
    if code < 400:
        return "success"
    return "user_error" if code < 500 else "error"


def _item(api: FalApi, job: Job, payloads: bool) -> dict[str, Any]:
    wall = api.wall
    started, ended = job.started_at, job.completed_at if job.state == "COMPLETED" else None
    item: dict[str, Any] = {
        "request_id": job.request_id,
        "endpoint_id": job.endpoint_id,
        "sent_at": wall.iso(job.submitted_at),
        "started_at": wall.iso(started) if started is not None else None,
        "ended_at": wall.iso(ended) if ended is not None else None,
        "status_code": _status_code(job),
        "duration": round(ended - started, 6) if started is not None and ended is not None else None,
    }
    if payloads:
        stored = job.options.store_io
        error = job.error
        output = job.output if error is None else error.body()
        item["json_input"] = dict(job.arguments) if stored else None
        item["json_output"] = output if stored and job.state == "COMPLETED" else None
    return item


def _requests(api: FalApi, route: Route, request: Request, shaping: Fault | None) -> Response:
    ids = _endpoint_ids(request)
    if len(ids) != 1:
        return platform_error(400, "validation_error", "Exactly one endpoint_id is required.")
    endpoint = ids[0]
    if api.model_for(endpoint) is None:
        return platform_error(404, "not_found", f"Endpoint not found: {endpoint}")
    wanted_id = request.param("request_id")
    status = request.param("status")
    if status is not None and status not in _STATUS_FILTERS:
        return platform_error(400, "validation_error", f"status must be one of {', '.join(_STATUS_FILTERS)}.")
    try:
        limit = int(request.param("limit") or DEFAULT_REQUESTS_LIMIT)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_REQUESTS_LIMIT:
        return platform_error(400, "validation_error", f"limit must be an integer from 1 to {MAX_REQUESTS_LIMIT}.")
    now_wall = datetime.now(timezone.utc)
    try:
        end = _instant(request.param("end") or now_wall.isoformat())
        window = timedelta(days=90) if wanted_id else timedelta(hours=24)
        start_text = request.param("start")
        start = _instant(start_text) if start_text else end - window
        before = _read_cursor(request.param("cursor") or "") if request.param("cursor") else None
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        return platform_error(400, "validation_error", f"Invalid start, end or cursor: {exc}")
    payloads = "payloads" in ",".join(request.query.get("expand", [])).split(",")
    lag = shaping.seconds if shaping is not None and shaping.kind == "lag" else 0.0
    hidden = set(shaping.request_ids) if shaping is not None and shaping.kind == "omit" else set()

    board = api.board
    with board.cond:
        now = api.clock()
        board.advance_locked(now)
        matches = []
        for job in reversed(board.jobs_locked()):
            if endpoint not in (job.endpoint_id, job.model.id):
                continue
            if (wanted_id and job.request_id != wanted_id) or job.request_id in hidden:
                continue
            if job.submitted_at > now - lag or (before is not None and job.seq >= before):
                continue
            if not start <= api.wall.moment(job.submitted_at) <= end:
                continue
            code = _status_code(job)
            if status is not None and (code is None or _status_class(code) != status):
                continue
            matches.append(job)
            if len(matches) > limit:
                break
        page = [_item(api, job, payloads) for job in matches[:limit]]
        more = len(matches) > limit
        next_cursor = _cursor(matches[limit - 1].seq) if more else None
    return json_response(200, {"items": page, "next_cursor": next_cursor, "has_more": more})


#: action -> handler; every platform route needs the API key (checked by the caller).
handlers = {"pricing": _pricing, "requests": _requests}
