"""fal webhook deliveries for the receiver tests (the Flask blueprint and the Django view): genuine or tampered with."""

from __future__ import annotations

import json
import time

from falwrap.testing import FakeFal

#: Each way a delivery is tampered with, the HTTP status the receiver answers, and its error code.
TAMPERINGS = [
    ("forged_signature", 401, "bad_signature"),
    ("body_changed", 401, "bad_signature"),
    ("other_delivery_headers", 401, "bad_signature"),
    ("stale", 401, "stale_timestamp"),
    ("future", 401, "future_timestamp"),
    ("missing_signature", 401, "missing_header"),
    ("missing_user_id", 401, "missing_header"),
    ("not_json", 400, "malformed_body"),
    ("oversized", 400, "body_too_large"),
]


def signed_delivery(fal: FakeFal, request_id: str) -> tuple[bytes, dict[str, str]]:
    """The body of a successful delivery for ``request_id`` (one image) and its headers, signed with FakeFal's key."""
    body = json.dumps(
        {"request_id": request_id, "gateway_request_id": request_id, "status": "OK",
         "payload": {"images": [{"url": "http://127.0.0.1:1/a.png", "width": 512, "height": 512}]},
         "error": None, "payload_error": None}
    ).encode()  # fmt: skip
    return body, fal.webhooks.sign(body, request_id)


def tampered(kind: str, fal: FakeFal, request_id: str) -> tuple[bytes, dict[str, str]]:
    """The delivery of :func:`signed_delivery` for ``request_id``, tampered with as ``kind`` (of TAMPERINGS) says."""
    body, headers = signed_delivery(fal, request_id)
    if kind == "forged_signature":
        headers["X-Fal-Webhook-Signature"] = "ab" * 64
    elif kind == "body_changed":
        body = body.replace(b"a.png", b"b.png")
    elif kind == "other_delivery_headers":
        _, headers = signed_delivery(fal, f"{request_id}-other")
    elif kind in {"stale", "future"}:
        shift = -360 if kind == "stale" else 360
        headers = fal.webhooks.sign(body, request_id, timestamp=int(time.time()) + shift)
    elif kind == "missing_signature":
        del headers["X-Fal-Webhook-Signature"]
    elif kind == "missing_user_id":
        del headers["X-Fal-Webhook-User-Id"]
    elif kind == "not_json":
        body = b"not json at all"
        headers = fal.webhooks.sign(body, request_id)
    elif kind == "oversized":
        body = b"x" * (10 * 1024 * 1024 + 1)
    else:
        msg = f"unknown tampering {kind!r}"
        raise ValueError(msg)
    return body, headers
