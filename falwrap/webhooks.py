"""Verify fal's webhook deliveries: Ed25519 signatures checked against the keys fal publishes.

fal signs each delivery with Ed25519. The signed message is the request id, the
user id, the timestamp and the hex SHA-256 of the raw body, joined by newlines;
the headers ``X-Fal-Webhook-Request-Id``, ``X-Fal-Webhook-User-Id``,
``X-Fal-Webhook-Timestamp`` (epoch seconds) and ``X-Fal-Webhook-Signature``
(hex) carry them. The public keys are a JWKS; a delivery is genuine when any
of its keys verifies the signature and the timestamp is within ``tolerance_s``
of now.

    event = falwrap.webhooks.verify(request.headers, request.body)
    if event.ok:
        store(event.request_id, event.payload)

Every rejection is a :class:`~falwrap.errors.WebhookVerificationError` whose
``reason`` says why (see its ``REASONS``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
import cachetools
import requests

from falwrap._jwks import JwksKeyStore, JwksUnavailable, KeySet
from falwrap.errors import InvalidInputError, WebhookVerificationError

__all__ = [
    "DEFAULT_JWKS_URL",
    "DEFAULT_TOLERANCE_S",
    "MAX_BODY_BYTES",
    "WebhookEvent",
    "WebhookVerificationError",
    "WebhookVerifier",
    "verify",
]

#: Where fal publishes its webhook public keys.
DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"

#: How far a delivery's timestamp may be from now, either way, in seconds (fal's recommendation).
DEFAULT_TOLERANCE_S = 300.0

#: Largest body accepted, checked before anything is hashed or parsed. fal sends outputs
#: as URLs, so a delivery is a few kilobytes; 10 MiB leaves room for models that inline
#: their media as data URIs while bounding what an unauthenticated sender can make a
#: receiver hash and parse.
MAX_BODY_BYTES = 10 * 1024 * 1024

#: A tolerance above an hour would let a captured delivery be replayed for that long.
MAX_TOLERANCE_S = 3600.0

_HEADER_REQUEST_ID = "x-fal-webhook-request-id"
_HEADER_USER_ID = "x-fal-webhook-user-id"
_HEADER_TIMESTAMP = "x-fal-webhook-timestamp"
_HEADER_SIGNATURE = "x-fal-webhook-signature"
_HEADERS = (_HEADER_REQUEST_ID, _HEADER_USER_ID, _HEADER_TIMESTAMP, _HEADER_SIGNATURE)

# Ids are joined with newlines into the signed message: printable ASCII without
# whitespace keeps that message unambiguous.
_ID = re.compile(r"[\x21-\x7e]{1,256}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")
_MAX_URL_LENGTH = 2048
_MAX_BODY_LIMIT = 1024 * 1024 * 1024

#: Key stores shared by every verifier of the same URL in this process (one cache, one
#: fetch throttle per URL); a store that falls out simply fetches again.
_SHARED_STORES: cachetools.LRUCache[str, JwksKeyStore] = cachetools.LRUCache(maxsize=16)
_SHARED_LOCK = threading.Lock()


@attrs.frozen
class WebhookEvent:
    """One verified delivery: how a job submitted with a webhook URL ended.

    Attributes:
        request_id: the queue request id the job was submitted as.
        gateway_request_id: the id of fal's last internal attempt (usually the same).
        status: ``"OK"`` when the job produced an output, ``"ERROR"`` otherwise.
        payload: the job's output (``OK``) or fal's error details (``ERROR``); None
            when fal could not serialise it (see ``payload_error``).
        error: fal's error text for ``ERROR`` deliveries, else None.
        payload_error: why ``payload`` is None, when fal says so.
        user_id: the fal user the delivery was signed for.
        timestamp: when fal signed it, in epoch seconds.
    """

    request_id: str
    gateway_request_id: str | None
    status: Literal["OK", "ERROR"]
    payload: Any
    error: str | None
    payload_error: str | None
    user_id: str
    timestamp: int

    @property
    def ok(self) -> bool:
        """Whether the job succeeded.

        Returns:
            True for an ``OK`` delivery.
        """
        return self.status == "OK"


class WebhookVerifier:
    """Checks deliveries against the keys published at one JWKS URL. Thread-safe; hold one per app.

    Keys are fetched on first use and cached for a day. A signature that no
    cached key verifies triggers one refetch (fal may have rotated its key),
    and fetches of one URL are at least a minute apart, so forged deliveries
    cannot make the verifier hammer the JWKS endpoint. Without ``session`` and
    ``clock``, every verifier of the same URL in the process shares one key cache.

    Args:
        jwks_url: where the public keys are published (``FalConfig.webhook_jwks_url``
            in an app).
        tolerance_s: how far the delivery's timestamp may be from now, either way.
        max_body_bytes: the largest body accepted.
        session: the ``requests.Session`` to fetch keys with (a private key cache).
        clock: monotonic seconds for the key cache's age and the refetch interval
            (a private key cache); tests inject one instead of sleeping.

    Raises:
        InvalidInputError: an argument is out of range; ``field`` names it.
    """

    def __init__(
        self,
        jwks_url: str = DEFAULT_JWKS_URL,
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        session: requests.Session | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        _check_url(jwks_url)
        if not _is_number(tolerance_s) or not 0 <= tolerance_s <= MAX_TOLERANCE_S:
            msg = f"tolerance_s: expected seconds from 0 to {MAX_TOLERANCE_S:g}, got {tolerance_s!r}."
            raise InvalidInputError(msg, field="tolerance_s")
        if not _is_int(max_body_bytes):
            msg = f"max_body_bytes: expected a whole number of bytes, got {max_body_bytes!r}."
            raise InvalidInputError(msg, field="max_body_bytes")
        if not 1 <= max_body_bytes <= _MAX_BODY_LIMIT:
            msg = f"max_body_bytes: expected from 1 to {_MAX_BODY_LIMIT} bytes, got {max_body_bytes!r}."
            raise InvalidInputError(msg, field="max_body_bytes")
        if not _is_optional(session, lambda value: isinstance(value, requests.Session)):
            msg = f"session: expected a requests.Session, got {type(session).__name__}."
            raise InvalidInputError(msg, field="session")
        if not _is_optional(clock, callable):
            msg = f"clock: expected a function returning seconds, got {type(clock).__name__}."
            raise InvalidInputError(msg, field="clock")
        self._tolerance_s = float(tolerance_s)
        self._max_body_bytes = max_body_bytes
        if session is None and clock is None:
            self._keys = _shared_store(jwks_url)
        else:
            self._keys = JwksKeyStore(jwks_url, session=session, clock=clock or time.monotonic)

    def __repr__(self) -> str:
        return f"<WebhookVerifier jwks_url={self._keys.url!r} tolerance_s={self._tolerance_s:g}>"

    @property
    def jwks_url(self) -> str:
        """The JWKS URL keys come from.

        Returns:
            The URL.
        """
        return self._keys.url

    @property
    def tolerance_s(self) -> float:
        """How far a timestamp may be from now, in seconds.

        Returns:
            The tolerance.
        """
        return self._tolerance_s

    def verify(self, headers: Any, body: bytes, *, now: float | None = None) -> WebhookEvent:
        """Check one delivery and return what it says.

        Args:
            headers: the request's headers: a mapping (names case-insensitive, e.g.
                Django's ``request.headers`` or ``request.META``), werkzeug's
                ``Headers``, or ``(name, value)`` pairs (str or bytes).
            body: the raw request body, exactly as received (Django ``request.body``,
                Flask ``request.get_data()``).
            now: the current time in epoch seconds; ``time.time()`` when None.

        Returns:
            The verified event.

        Raises:
            WebhookVerificationError: the delivery is not provably from fal; ``reason`` says why.
            InvalidInputError: ``headers``, ``body`` or ``now`` is not of a usable type.
        """
        current = time.time() if now is None else _check_now(now)
        if not _is_bytes(body):
            msg = (
                f"body: expected the raw request body as bytes (request.body, request.get_data()), "
                f"got {type(body).__name__}."
            )
            raise InvalidInputError(msg, field="body")
        raw = bytes(body)
        if len(raw) > self._max_body_bytes:
            msg = f"The body is {len(raw)} bytes, more than the {self._max_body_bytes} accepted."
            raise WebhookVerificationError(msg, reason="body_too_large")
        found = _collect_headers(headers)
        request_id = _id_header(found, _HEADER_REQUEST_ID)
        user_id = _id_header(found, _HEADER_USER_ID)
        timestamp_text = _header(found, _HEADER_TIMESTAMP)
        if not _TIMESTAMP.fullmatch(timestamp_text):
            msg = f"X-Fal-Webhook-Timestamp must be epoch seconds (digits only), got {timestamp_text[:40]!r}."
            raise WebhookVerificationError(msg, reason="malformed_header")
        signature_text = _header(found, _HEADER_SIGNATURE)
        if not _SIGNATURE.fullmatch(signature_text):
            msg = "X-Fal-Webhook-Signature must be 128 hexadecimal digits (a 64-byte Ed25519 signature)."
            raise WebhookVerificationError(msg, reason="malformed_header")
        timestamp = int(timestamp_text)
        self._check_age(timestamp, current)
        digest = hashlib.sha256(raw).hexdigest()
        message = f"{request_id}\n{user_id}\n{timestamp_text}\n{digest}".encode()
        self._check_signature(bytes.fromhex(signature_text), message)
        return _event(raw, request_id, user_id, timestamp)

    def _check_age(self, timestamp: int, now: float) -> None:
        age = now - timestamp
        if age > self._tolerance_s:
            msg = (
                f"The delivery was signed {age:.0f} s ago, more than the {self._tolerance_s:g} s allowed: "
                "a replay, or this machine's clock is wrong."
            )
            raise WebhookVerificationError(msg, reason="stale_timestamp")
        if -age > self._tolerance_s:
            msg = (
                f"The delivery is dated {-age:.0f} s in the future, more than the {self._tolerance_s:g} s "
                "allowed: check this machine's clock."
            )
            raise WebhookVerificationError(msg, reason="future_timestamp")

    def _check_signature(self, signature: bytes, message: bytes) -> None:
        try:
            keys = self._keys.current()
        except JwksUnavailable as exc:
            msg = f"The webhook keys at {self._keys.url} could not be fetched: {exc}."
            raise WebhookVerificationError(msg, reason="jwks_unavailable") from exc
        if keys.verifies(signature, message):
            return
        newer: KeySet | None = self._keys.newer_than(keys)
        if newer is not None:
            if newer.verifies(signature, message):
                return
            keys = newer
        if not keys.keys:
            msg = (
                f"The JWKS at {self._keys.url} lists no Ed25519 key to check the signature with: "
                "is FALWRAP_WEBHOOK_JWKS_URL right?"
            )
            raise WebhookVerificationError(msg, reason="unknown_key")
        msg = (
            "The signature matches none of fal's published keys: the body or the X-Fal-Webhook headers "
            "were changed, or the delivery did not come from fal."
        )
        raise WebhookVerificationError(msg, reason="bad_signature")


def verify(
    headers: Any,
    body: bytes,
    *,
    jwks_url: str = DEFAULT_JWKS_URL,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """Verify one webhook delivery from fal and return its event.

    Keys are cached per ``jwks_url`` for the whole process (see
    :class:`WebhookVerifier`, which this uses).

    Args:
        headers: the request's headers (a mapping with names in any case, werkzeug's
            ``Headers``, Django's ``request.headers`` or ``request.META``, or pairs).
        body: the raw request body, exactly as received.
        jwks_url: where fal's public keys are published.
        tolerance_s: how far the timestamp may be from now, either way, in seconds.
        now: the current time in epoch seconds; ``time.time()`` when None.

    Returns:
        The verified event.

    Raises:
        WebhookVerificationError: the delivery is not provably from fal; ``reason`` says why.
        InvalidInputError: an argument is not of a usable type or is out of range.
    """
    return WebhookVerifier(jwks_url, tolerance_s=tolerance_s).verify(headers, body, now=now)


def _shared_store(url: str) -> JwksKeyStore:
    with _SHARED_LOCK:
        store = _SHARED_STORES.get(url)
        if store is None:
            store = _SHARED_STORES[url] = JwksKeyStore(url)
        return store


# The checks below take Any: they guard against what callers pass despite the annotations.


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bytes(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def _is_optional(value: Any, check: Callable[[Any], bool]) -> bool:
    return value is None or check(value)


def _check_now(now: Any) -> float:
    if not _is_number(now) or now < 0:
        msg = f"now: expected epoch seconds (a finite number), got {now!r}."
        raise InvalidInputError(msg, field="now")
    return float(now)


def _check_url(url: Any) -> None:
    ok = isinstance(url, str) and len(url) <= _MAX_URL_LENGTH and not any(c.isspace() for c in url)
    parts = urlsplit(url) if ok else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"jwks_url: expected an http:// or https:// URL, got {url!r}."
        raise InvalidInputError(msg, field="jwks_url")


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def _pairs(headers: Any) -> Iterable[Any]:
    if isinstance(headers, Mapping):
        return headers.items()
    items = getattr(headers, "items", None)
    if callable(items):
        # werkzeug's Headers: items() yields every header, repeated ones included.
        return items()  # type: ignore[no-any-return]
    if isinstance(headers, (str, bytes)) or not isinstance(headers, Iterable):
        msg = f"headers: expected a mapping or (name, value) pairs, got {type(headers).__name__}."
        raise InvalidInputError(msg, field="headers")
    return headers


def _collect_headers(headers: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in _pairs(headers):
        try:
            name, value = pair
        except (TypeError, ValueError):
            msg = f"headers: expected (name, value) pairs, got {pair!r}."
            raise InvalidInputError(msg, field="headers") from None
        key = _text(name)
        # Django's request.META spells X-Fal-Webhook-Signature as HTTP_X_FAL_WEBHOOK_SIGNATURE.
        if key.startswith("HTTP_"):
            key = key[5:]
        key = key.lower().replace("_", "-")
        if key not in _HEADERS:
            continue
        if key in found:
            msg = f"{_title(key)} was sent more than once."
            raise WebhookVerificationError(msg, reason="malformed_header")
        found[key] = _text(value).strip()
    return found


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _header(found: Mapping[str, str], name: str) -> str:
    value = found.get(name, "")
    if not value:
        msg = f"The {_title(name)} header is missing: this request is not a fal webhook delivery."
        raise WebhookVerificationError(msg, reason="missing_header")
    return value


def _id_header(found: Mapping[str, str], name: str) -> str:
    value = _header(found, name)
    if not _ID.fullmatch(value):
        msg = f"{_title(name)} must be 1 to 256 printable ASCII characters without spaces."
        raise WebhookVerificationError(msg, reason="malformed_header")
    return value


def _event(raw: bytes, request_id: str, user_id: str, timestamp: int) -> WebhookEvent:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        msg = "The body is not a JSON object, although its signature is valid."
        raise WebhookVerificationError(msg, reason="malformed_body")
    body_id = document.get("request_id")
    status = document.get("status")
    gateway = document.get("gateway_request_id")
    error = document.get("error")
    payload_error = document.get("payload_error")
    if not isinstance(body_id, str) or status not in ("OK", "ERROR"):
        msg = 'The body lacks a "request_id" string or a "status" of "OK" or "ERROR".'
        raise WebhookVerificationError(msg, reason="malformed_body")
    if not all(value is None or isinstance(value, str) for value in (gateway, error, payload_error)):
        msg = 'The body\'s "gateway_request_id", "error" and "payload_error" must be strings or null.'
        raise WebhookVerificationError(msg, reason="malformed_body")
    if not hmac.compare_digest(body_id.encode(), request_id.encode()):
        msg = "The body's request_id differs from the X-Fal-Webhook-Request-Id header."
        raise WebhookVerificationError(msg, reason="request_id_mismatch")
    return WebhookEvent(
        request_id=request_id,
        gateway_request_id=gateway,
        status=status,
        payload=document.get("payload"),
        error=error,
        payload_error=payload_error,
        user_id=user_id,
        timestamp=timestamp,
    )
