"""The answer shapes fal documents, and a checker that says where an answer differs.

Each shape follows fal's documentation of its queue, sync, storage and platform
APIs (https://docs.fal.ai/documentation/model-apis/inference/queue,
https://docs.fal.ai/platform-apis): a dict maps each required key to a type, a
tuple of types, a nested shape, a one-element list ``[shape]`` for "list of", or
a set of allowed values.  ``OPTIONAL`` wraps keys that may be absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "CANCEL",
    "COMPLETED",
    "FLUX_OUTPUT",
    "IN_PROGRESS",
    "IN_QUEUE",
    "ISO",
    "KLING_OUTPUT",
    "LOG",
    "MODEL_ERROR",
    "PRICING",
    "REQUESTS",
    "REQUESTS_STATUSES",
    "REQUEST_ERROR",
    "SUBMIT",
    "UPLOAD_INITIATE",
    "UPLOAD_TOKEN",
    "UPLOAD_V3",
    "check",
]


@attrs.frozen
class Optional:
    """A key that may be absent; when present its value has ``shape``."""

    shape: Any


@attrs.frozen
class Iso:
    """An ISO-8601 timestamp string."""


OPTIONAL = Optional
ISO = Iso()
NULL = type(None)

LOG = {"message": str, "level": {"STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"}, "source": str, "timestamp": ISO}
_URLS = {"request_id": str, "response_url": str, "status_url": str, "cancel_url": str}
SUBMIT = {"status": {"IN_QUEUE"}, **_URLS, "queue_position": int, "gateway_request_id": str}
IN_QUEUE = {"status": {"IN_QUEUE"}, **_URLS, "queue_position": int}
IN_PROGRESS = {"status": {"IN_PROGRESS"}, **_URLS, "logs": ([LOG], NULL)}
COMPLETED = {
    "status": {"COMPLETED"},
    **_URLS,
    "logs": ([LOG], NULL),
    "metrics": OPTIONAL({"inference_time": OPTIONAL((int, float))}),
    "error": OPTIONAL(str),
    "error_type": OPTIONAL(str),
}
CANCEL = {"status": {"CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"}}
FLUX_OUTPUT = {
    "images": [{"url": str, "width": int, "height": int, "content_type": str}],
    "timings": dict,
    "seed": int,
    "has_nsfw_concepts": [bool],
    "prompt": str,
}
KLING_OUTPUT = {"video": {"url": str, "content_type": str, "file_name": str, "file_size": int}}
MODEL_ERROR = {"detail": [{"loc": list, "msg": str, "type": str, "url": OPTIONAL(str), "ctx": OPTIONAL(dict)}]}
REQUEST_ERROR = {"detail": str, "error_type": str}
PRICING = {
    "prices": [{"endpoint_id": str, "unit_price": (int, float), "unit": str, "currency": str}],
    "next_cursor": (str, NULL),
    "has_more": bool,
}
REQUESTS = {
    "items": [
        {
            "request_id": str,
            "endpoint_id": str,
            "sent_at": ISO,
            "started_at": (ISO, NULL),
            "ended_at": (ISO, NULL),
            "status_code": (int, NULL),
            "duration": (int, float, NULL),
            "json_input": OPTIONAL((dict, NULL)),
            "json_output": OPTIONAL((dict, NULL)),
        }
    ],
    "next_cursor": (str, NULL),
    "has_more": bool,
}
UPLOAD_TOKEN = {"token": str, "token_type": str, "base_url": str, "expires_at": ISO}
UPLOAD_INITIATE = {"upload_url": str, "file_url": str}
UPLOAD_V3 = {"access_url": str, "content_type": OPTIONAL(str)}


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _problems(value: Any, shape: Any, where: str) -> list[str]:
    if isinstance(shape, Iso):
        return [] if _is_iso(value) else [f"{where}: {value!r} is not an ISO-8601 time"]
    if isinstance(shape, tuple):
        if any(not _problems(value, option, where) for option in shape):
            return []
        return [f"{where}: {value!r} matches none of {shape}"]
    if isinstance(shape, set):
        return [] if value in shape else [f"{where}: {value!r} not in {sorted(shape)}"]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for index, item in enumerate(value) for p in _problems(item, shape[0], f"{where}[{index}]")]
    if isinstance(shape, Mapping):
        if not isinstance(value, Mapping):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        found: list[str] = []
        for key, expected in shape.items():
            optional = isinstance(expected, Optional)
            if key not in value:
                if not optional:
                    found.append(f"{where}.{key}: missing")
                continue
            found += _problems(value[key], expected.shape if optional else expected, f"{where}.{key}")
        return found
    if shape is int and isinstance(value, bool):
        return [f"{where}: {value!r} is a bool, not an int"]
    return [] if isinstance(value, shape) else [f"{where}: {value!r} is not {shape.__name__}"]


def check(value: Any, shape: Any, name: str = "answer") -> None:
    """Assert that ``value`` has the documented ``shape``, listing every difference.

    Args:
        value: a decoded JSON answer.
        shape: one of this module's shapes.
        name: what the answer is, for the message.

    Raises:
        AssertionError: naming each missing key and wrong type.
    """
    problems = _problems(value, shape, name)
    assert not problems, "\n".join(problems)


#: The ``status`` filter values of the platform requests API.
REQUESTS_STATUSES = ("success", "user_error", "error")
