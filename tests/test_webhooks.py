"""falwrap.webhooks: fal's Ed25519 webhook signatures verified against a real JWKS served by FakeFal."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import falwrap
from falwrap import FalwrapError, InvalidInputError, WebhookVerificationError
from falwrap.testing import FakeFal, Fault
from falwrap.webhooks import DEFAULT_JWKS_URL, MAX_BODY_BYTES, WebhookEvent, WebhookVerifier, verify

#: Epoch seconds every delivery here is signed at; ``now=`` is set relative to it.
T = 1_800_000_000


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal() as emulator:
        yield emulator


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(fal: FakeFal, clock: Clock) -> Iterator[WebhookVerifier]:
    with requests.Session() as session:
        yield WebhookVerifier(fal.webhook_jwks_url, session=session, clock=clock)


def body_of(request_id: str, status: str = "OK", **fields: Any) -> bytes:
    document = {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": status,
        "payload": {"images": [{"url": "http://127.0.0.1/files/a.png"}]} if status == "OK" else {"detail": []},
        "error": None if status == "OK" else "Invalid status code: 422",
        "payload_error": None,
        **fields,
    }
    return json.dumps(document).encode()


def delivery(fal: FakeFal, request_id: str | None = None, ts: int = T, **fields: Any) -> tuple[dict[str, str], bytes]:
    rid = request_id or str(uuid.uuid4())
    body = body_of(rid, **fields)
    return fal.webhooks.sign(body, rid, timestamp=ts), body


def jwk_of(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def own_signature(key: Ed25519PrivateKey, request_id: str, user_id: str, ts: int, body: bytes) -> dict[str, str]:
    """Sign as fal documents it, independently of FakeFal's signer."""
    message = f"{request_id}\n{user_id}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(ts),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


def rejection(verifier: WebhookVerifier, headers: Any, body: bytes, now: float = T) -> WebhookVerificationError:
    with pytest.raises(WebhookVerificationError) as caught:
        verifier.verify(headers, body, now=now)
    return caught.value


# -- genuine deliveries -----------------------------------------------------------------------------


def test_genuine_delivery_returns_its_event(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A delivery signed with FakeFal's key verifies and returns every field, the user id and timestamp."""
    headers, body = delivery(fal, "req-1")
    event = verifier.verify(headers, body, now=T)
    assert event == WebhookEvent(
        request_id="req-1",
        gateway_request_id="req-1",
        status="OK",
        payload={"images": [{"url": "http://127.0.0.1/files/a.png"}]},
        error=None,
        payload_error=None,
        user_id=fal.webhooks.user_id,
        timestamp=T,
    )
    assert event.ok


def test_error_delivery_is_not_ok(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """An ERROR delivery verifies too; ok is False and error carries fal's text."""
    headers, body = delivery(fal, status="ERROR")
    event = verifier.verify(headers, body, now=T)
    assert (event.ok, event.status, event.error, event.payload) == (
        False,
        "ERROR",
        "Invalid status code: 422",
        {"detail": []},
    )


def test_signature_format_matches_fals_documentation(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A delivery signed by hand (id, user, timestamp, sha256 hex, newline-joined) verifies against its JWKS."""
    key = Ed25519PrivateKey.generate()
    fal.inject("jwks", Fault.http(200, json={"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}, jwk_of(key)]}))
    body = body_of("req-own")
    event = verifier.verify(own_signature(key, "req-own", "github|42", T, body), body, now=T)
    assert (event.request_id, event.user_id) == ("req-own", "github|42")


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_at_the_tolerance_edge_is_accepted(fal: FakeFal, verifier: WebhookVerifier, offset: int) -> None:
    """A timestamp exactly 300 s old or ahead is still accepted."""
    headers, body = delivery(fal)
    assert verifier.verify(headers, body, now=T + offset).ok


@pytest.mark.parametrize(
    "shape",
    ["dict-lower", "dict-upper", "pairs", "bytes-pairs", "werkzeug", "django-headers", "django-meta"],
)
def test_every_header_container_is_accepted(fal: FakeFal, verifier: WebhookVerifier, shape: str) -> None:
    """Mappings in any case, pairs (str or bytes), werkzeug Headers and Django headers/META all verify."""
    headers, body = delivery(fal)
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    if shape == "dict-lower":
        given: Any = {name.lower(): value for name, value in headers.items()}
    elif shape == "dict-upper":
        given = {name.upper(): value for name, value in headers.items()}
    elif shape == "pairs":
        given = list(headers.items())
    elif shape == "bytes-pairs":
        given = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    elif shape == "werkzeug":
        from werkzeug.datastructures import Headers

        given = Headers(list(headers.items()))
    elif shape == "django-headers":
        from django.http.request import HttpHeaders

        given = HttpHeaders(meta)
    else:
        given = {**meta, "CONTENT_TYPE": "application/json", "REMOTE_ADDR": "127.0.0.1"}
    assert verifier.verify(given, body, now=T).ok


# -- the security cases -----------------------------------------------------------------------------


def test_forged_signature_is_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A well-formed signature made of random bytes: bad_signature."""
    headers, body = delivery(fal)
    headers["X-Fal-Webhook-Signature"] = bytes(range(64)).hex()
    error = rejection(verifier, headers, body)
    assert error.reason == "bad_signature"
    assert "none of fal's published keys" in str(error)


def test_body_changed_by_one_byte_is_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """Flipping one byte of a genuine body: bad_signature."""
    headers, body = delivery(fal)
    tampered = bytearray(body)
    tampered[body.index(b"a.png")] ^= 0x01
    assert rejection(verifier, headers, bytes(tampered)).reason == "bad_signature"


def test_headers_of_another_delivery_are_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """The genuine headers of delivery A sent with the body of delivery B: bad_signature."""
    headers_a, _ = delivery(fal, "req-a")
    _, body_b = delivery(fal, "req-a", status="ERROR")
    assert rejection(verifier, headers_a, body_b).reason == "bad_signature"


def test_headers_naming_another_request_are_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A genuine delivery whose request-id header is swapped for another id: bad_signature."""
    headers, body = delivery(fal, "req-a")
    headers["X-Fal-Webhook-Request-Id"] = "req-b"
    assert rejection(verifier, headers, body).reason == "bad_signature"


def test_timestamp_six_minutes_old_is_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A genuine delivery replayed 6 minutes later: stale_timestamp, before any key is fetched."""
    headers, body = delivery(fal)
    error = rejection(verifier, headers, body, now=T + 360)
    assert error.reason == "stale_timestamp"
    assert "360 s ago" in str(error)
    assert fal.counters["jwks"] == 0


def test_timestamp_six_minutes_ahead_is_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A delivery dated 6 minutes in the future: future_timestamp."""
    headers, body = delivery(fal)
    error = rejection(verifier, headers, body, now=T - 360)
    assert error.reason == "future_timestamp"
    assert "360 s in the future" in str(error)


def test_key_fal_does_not_publish_is_rejected_after_one_refetch(
    fal: FakeFal, verifier: WebhookVerifier, clock: Clock
) -> None:
    """Signed with a key outside the JWKS: one refetch (keys may have rotated), then bad_signature."""
    verifier.verify(*delivery(fal), now=T)
    clock.advance(61)
    body = body_of("req-x")
    headers = own_signature(Ed25519PrivateKey.generate(), "req-x", fal.webhooks.user_id, T, body)
    assert rejection(verifier, headers, body).reason == "bad_signature"
    assert fal.counters["jwks"] == 2


def test_jwks_without_an_ed25519_key_is_unknown_key(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A JWKS that lists no usable Ed25519 key (other types, bad x): unknown_key, naming the setting."""
    keys = [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}, {"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ"}]
    fal.inject("jwks", Fault.http(200, json={"keys": keys}))
    error = rejection(verifier, *delivery(fal))
    assert error.reason == "unknown_key"
    assert "FALWRAP_WEBHOOK_JWKS_URL" in str(error)


@pytest.mark.parametrize(
    "header",
    ["X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp", "X-Fal-Webhook-Signature"],
)
def test_each_missing_header_is_rejected(fal: FakeFal, verifier: WebhookVerifier, header: str) -> None:
    """Without any one of the four headers (or with it empty): missing_header naming it."""
    headers, body = delivery(fal)
    del headers[header]
    error = rejection(verifier, headers, body)
    assert error.reason == "missing_header"
    assert header in str(error)
    headers[header] = ""
    assert rejection(verifier, headers, body).reason == "missing_header"


@pytest.mark.parametrize("text", [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_validly_signed_non_json_body_is_rejected(fal: FakeFal, verifier: WebhookVerifier, text: bytes) -> None:
    """A correctly signed body that is not a JSON object (text, array, bad UTF-8, deep nesting): malformed_body."""
    headers = fal.webhooks.sign(text, "req-1", timestamp=T)
    assert rejection(verifier, headers, text).reason == "malformed_body"


@pytest.mark.parametrize(
    "fields",
    [{"status": "DONE"}, {"request_id": 7}, {"error": 5}, {"gateway_request_id": ["x"]}],
)
def test_signed_body_with_wrong_fields_is_rejected(
    fal: FakeFal, verifier: WebhookVerifier, fields: dict[str, Any]
) -> None:
    """A signed JSON object whose status or id fields have the wrong type or value: malformed_body."""
    body = json.dumps({**json.loads(body_of("req-1")), **fields}).encode()
    headers = fal.webhooks.sign(body, "req-1", timestamp=T)
    assert rejection(verifier, headers, body).reason == "malformed_body"


def test_body_naming_another_request_is_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A signed delivery whose body's request_id differs from the header's: request_id_mismatch."""
    body = body_of("req-other")
    headers = fal.webhooks.sign(body, "req-1", timestamp=T)
    assert rejection(verifier, headers, body).reason == "request_id_mismatch"


def test_oversized_body_is_rejected_before_any_work(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """A body over MAX_BODY_BYTES: body_too_large, with no header check and no key fetch."""
    error = rejection(verifier, {}, b"x" * (MAX_BODY_BYTES + 1))
    assert error.reason == "body_too_large"
    assert str(MAX_BODY_BYTES) in str(error)
    assert fal.counters["jwks"] == 0


def test_body_limit_is_configurable(fal: FakeFal, clock: Clock) -> None:
    """max_body_bytes lowers the limit: a genuine 300-byte delivery is refused under a 100-byte limit."""
    small = WebhookVerifier(fal.webhook_jwks_url, max_body_bytes=100, clock=clock)
    assert rejection(small, *delivery(fal)).reason == "body_too_large"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Fal-Webhook-Timestamp", "1800000000.5"),
        ("X-Fal-Webhook-Timestamp", "-1800000000"),
        ("X-Fal-Webhook-Timestamp", "\uff11\uff18\uff10\uff10"),  # fullwidth digits: isdigit() but not ASCII
        ("X-Fal-Webhook-Timestamp", "9" * 13),
        ("X-Fal-Webhook-Signature", "zz" * 64),
        ("X-Fal-Webhook-Signature", "ab" * 63),
        ("X-Fal-Webhook-Request-Id", "a\nb"),
        ("X-Fal-Webhook-User-Id", "x" * 257),
    ],
)
def test_malformed_header_is_rejected(fal: FakeFal, verifier: WebhookVerifier, header: str, value: str) -> None:
    """Timestamps that are not plain digits, signatures that are not 128 hex digits, odd ids: malformed_header."""
    headers, body = delivery(fal)
    headers[header] = value
    error = rejection(verifier, headers, body)
    assert error.reason == "malformed_header"
    assert header in str(error)


def test_repeated_header_is_rejected(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """Two signature headers (one genuine, one not): malformed_header, whichever comes first."""
    headers, body = delivery(fal)
    pairs = [*headers.items(), ("x-fal-webhook-signature", "00" * 64)]
    assert rejection(verifier, pairs, body).reason == "malformed_header"


# -- keys: cache, rotation, throttle ----------------------------------------------------------------


def test_keys_are_fetched_once_and_cached_for_a_day(fal: FakeFal, verifier: WebhookVerifier, clock: Clock) -> None:
    """Many deliveries cost one JWKS fetch; the next fetch happens only after 24 hours."""
    for _ in range(20):
        verifier.verify(*delivery(fal), now=T)
    clock.advance(24 * 3600 - 1)
    verifier.verify(*delivery(fal), now=T)
    assert fal.counters["jwks"] == 1
    clock.advance(2)
    verifier.verify(*delivery(fal), now=T)
    assert fal.counters["jwks"] == 2


def test_key_rotation_refetches_once_and_succeeds(fal: FakeFal, verifier: WebhookVerifier, clock: Clock) -> None:
    """After FakeFal rotates its key, the first delivery signed with it refetches the JWKS once and verifies."""
    verifier.verify(*delivery(fal), now=T)
    old_headers, old_body = delivery(fal, "req-old")
    fal.rotate_webhook_key()
    clock.advance(3600)
    assert verifier.verify(*delivery(fal, "req-new"), now=T).request_id == "req-new"
    assert verifier.verify(*delivery(fal), now=T).ok
    assert fal.counters["jwks"] == 2
    # The old key was dropped from the JWKS: what it signed no longer verifies.
    assert rejection(verifier, old_headers, old_body).reason == "bad_signature"


def test_rotation_keeping_the_old_key_accepts_both(fal: FakeFal, verifier: WebhookVerifier, clock: Clock) -> None:
    """rotate_webhook_key(keep_old=True) publishes both keys: old and new signatures verify after one refetch."""
    verifier.verify(*delivery(fal), now=T)
    old = delivery(fal)
    fal.rotate_webhook_key(keep_old=True)
    clock.advance(61)
    assert verifier.verify(*delivery(fal), now=T).ok
    assert verifier.verify(*old, now=T).ok
    assert fal.counters["jwks"] == 2


def test_rotation_within_a_minute_of_a_fetch_waits_for_the_minute(
    fal: FakeFal, verifier: WebhookVerifier, clock: Clock
) -> None:
    """Keys fetched seconds ago are not refetched: the new key verifies once the minute has passed."""
    verifier.verify(*delivery(fal), now=T)
    fal.rotate_webhook_key()
    fresh = delivery(fal)
    assert rejection(verifier, *fresh).reason == "bad_signature"
    clock.advance(60)
    assert verifier.verify(*fresh, now=T).ok
    assert fal.counters["jwks"] == 2


def test_burst_of_forged_deliveries_fetches_at_most_once_a_minute(
    fal: FakeFal, verifier: WebhookVerifier, clock: Clock
) -> None:
    """50 forged deliveries at once, then 50 more each half minute: never more than one JWKS fetch a minute."""
    verifier.verify(*delivery(fal), now=T)
    clock.advance(120)
    headers, body = delivery(fal)
    headers["X-Fal-Webhook-Signature"] = "ab" * 64
    fetches = [fal.counters["jwks"]]
    for _ in range(6):
        reasons: list[str] = []

        def forge(reasons: list[str] = reasons) -> None:
            reasons.append(rejection(verifier, headers, body).reason)

        threads = [threading.Thread(target=forge) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert reasons == ["bad_signature"] * 50
        fetches.append(fal.counters["jwks"])
        clock.advance(30)
    # Windows: [120 s, 150 s) fetches once, [150, 180) not, [180, 210) once, ...
    assert fetches == [1, 2, 2, 3, 3, 4, 4]


def test_first_verifications_in_parallel_share_one_fetch(fal: FakeFal, verifier: WebhookVerifier) -> None:
    """Eight threads verifying at once on a cold cache make one JWKS request between them."""
    deliveries = [delivery(fal) for _ in range(8)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda d=d: results.append(verifier.verify(*d, now=T).ok)) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8
    assert fal.counters["jwks"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(503),
        Fault.http(200, body="<html>maintenance</html>"),
        Fault.http(200, json=["not", "a", "jwks"]),
        Fault.http(200, json={"keys": [], "padding": "x" * 70_000}),
        Fault.reset(),
    ],
    ids=["503", "html", "not-a-jwks", "too-large", "reset"],
)
def test_unreachable_jwks_is_reported(fal: FakeFal, verifier: WebhookVerifier, fault: Fault) -> None:
    """A JWKS that fails, is not JSON, is not a key set, is too large or drops the connection: jwks_unavailable."""
    fal.inject("jwks", fault)
    error = rejection(verifier, *delivery(fal))
    assert error.reason == "jwks_unavailable"
    assert fal.webhook_jwks_url in str(error)


def test_failed_jwks_fetch_is_retried_after_a_minute(fal: FakeFal, verifier: WebhookVerifier, clock: Clock) -> None:
    """After a failed fetch the JWKS is not asked again for a minute; then a fetch succeeds."""
    fal.inject("jwks", Fault.http(503))
    assert rejection(verifier, *delivery(fal)).reason == "jwks_unavailable"
    clock.advance(59)
    error = rejection(verifier, *delivery(fal))
    assert (error.reason, fal.counters["jwks"]) == ("jwks_unavailable", 1)
    assert "next one is allowed in 1 s" in str(error)
    clock.advance(1)
    assert verifier.verify(*delivery(fal), now=T).ok
    assert fal.counters["jwks"] == 2


def test_failed_refetch_keeps_the_cached_keys(fal: FakeFal, verifier: WebhookVerifier, clock: Clock) -> None:
    """A refetch that fails leaves the cached keys in use: genuine deliveries keep verifying."""
    verifier.verify(*delivery(fal), now=T)
    clock.advance(61)
    fal.inject("jwks", Fault.http(500))
    headers, body = delivery(fal)
    forged = {**headers, "X-Fal-Webhook-Signature": "cd" * 64}
    assert rejection(verifier, forged, body).reason == "bad_signature"
    assert verifier.verify(headers, body, now=T).ok
    assert fal.counters["jwks"] == 2


def test_module_verify_shares_keys_per_url(fal: FakeFal) -> None:
    """falwrap.webhooks.verify() caches keys per JWKS URL across calls: two deliveries, one fetch."""
    now = T
    assert verify(*delivery(fal), jwks_url=fal.webhook_jwks_url, now=now).ok
    assert verify(*delivery(fal), jwks_url=fal.webhook_jwks_url, tolerance_s=10, now=now + 5).ok
    assert WebhookVerifier(fal.webhook_jwks_url).verify(*delivery(fal), now=now).ok
    assert fal.counters["jwks"] == 1
    with pytest.raises(WebhookVerificationError) as caught:
        verify(*delivery(fal), jwks_url=fal.webhook_jwks_url, tolerance_s=10, now=now + 11)
    assert caught.value.reason == "stale_timestamp"


# -- arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 3601, True, "300", None])
def test_bad_tolerance_is_refused(value: Any) -> None:
    """tolerance_s that is not seconds from 0 to 3600: InvalidInputError naming it, before any HTTP."""
    with pytest.raises(InvalidInputError) as caught:
        WebhookVerifier("http://127.0.0.1:9/jwks.json", tolerance_s=value)
    assert caught.value.field == "tolerance_s"
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ["", "ftp://x/jwks", "rest.alpha.fal.ai/jwks", "http:///jwks", "http://a b/", 5, None, "http://" + "x" * 3000],
)
def test_bad_jwks_url_is_refused(value: Any) -> None:
    """jwks_url that is not an http(s) URL with a host: InvalidInputError naming it."""
    with pytest.raises(InvalidInputError) as caught:
        verify({}, b"{}", jwks_url=value)
    assert caught.value.field == "jwks_url"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"max_body_bytes": 1.5}, "max_body_bytes"),
        ({"max_body_bytes": 2**40}, "max_body_bytes"),
        ({"session": "requests"}, "session"),
        ({"clock": 5}, "clock"),
    ],
)
def test_bad_verifier_arguments_are_refused(kwargs: dict[str, Any], field: str) -> None:
    """max_body_bytes out of range, a session that is not one, a clock that is not callable: InvalidInputError."""
    with pytest.raises(InvalidInputError) as caught:
        WebhookVerifier("http://127.0.0.1:9/jwks.json", **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("headers", "body", "now", "field"),
    [
        ({}, "{}", None, "body"),
        ({}, None, None, "body"),
        (5, b"{}", None, "headers"),
        ("X-Fal: 1", b"{}", None, "headers"),
        ([("only-a-name",)], b"{}", None, "headers"),
        ({}, b"{}", math.nan, "now"),
        ({}, b"{}", "now", "now"),
    ],
)
def test_bad_verify_arguments_are_refused(
    verifier: WebhookVerifier, headers: Any, body: Any, now: Any, field: str
) -> None:
    """A str or missing body, headers that are not a mapping or pairs, a bad now: InvalidInputError naming it."""
    with pytest.raises(InvalidInputError) as caught:
        verifier.verify(headers, body, now=now)
    assert caught.value.field == field


def test_verification_error_is_a_falwrap_value_error() -> None:
    """WebhookVerificationError is a FalwrapError and a ValueError, with a fixed set of reasons."""
    error = WebhookVerificationError("msg", reason="bad_signature")
    assert isinstance(error, FalwrapError)
    assert isinstance(error, ValueError)
    assert repr(error) == "WebhookVerificationError(reason='bad_signature', message='msg')"
    with pytest.raises(ValueError, match="unknown webhook verification reason"):
        WebhookVerificationError("msg", reason="nope")


def test_verifier_repr_and_defaults() -> None:
    """A verifier shows its JWKS URL and tolerance; the default URL is fal's."""
    verifier = WebhookVerifier()
    assert verifier.jwks_url == DEFAULT_JWKS_URL == "https://rest.alpha.fal.ai/.well-known/jwks.json"
    assert verifier.tolerance_s == 300
    assert repr(verifier) == f"<WebhookVerifier jwks_url={DEFAULT_JWKS_URL!r} tolerance_s=300>"


def test_webhooks_module_loads_lazily() -> None:
    """`import falwrap` loads neither falwrap.webhooks nor cryptography; `falwrap.webhooks` then resolves."""
    code = (
        "import sys, falwrap\n"
        "before = sorted(m for m in ('falwrap.webhooks', 'cryptography', 'requests') if m in sys.modules)\n"
        "module = falwrap.webhooks\n"
        "print(before, module.verify.__module__, 'webhooks' in dir(falwrap))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] falwrap.webhooks True"
    assert falwrap.webhooks.verify is verify
