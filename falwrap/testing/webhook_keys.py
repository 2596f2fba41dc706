"""FakeFal's webhook signing keys: Ed25519 key pairs, the JWKS that publishes them, and the signature."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import uuid

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["WebhookSigner", "signed_message"]


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs for one delivery.

    Args:
        request_id: the queue request id.
        user_id: the account's user id.
        timestamp: epoch seconds, as sent in the header.
        body: the raw body.

    Returns:
        ``request_id, user_id, timestamp, hex sha256(body)`` joined by newlines, UTF-8.
    """
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


@attrs.frozen
class _Key:
    kid: str
    private: Ed25519PrivateKey = attrs.field(repr=False)

    def jwk(self) -> dict[str, str]:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "use": "sig", "alg": "EdDSA"}


def _new_key() -> _Key:
    return _Key(secrets.token_hex(8), Ed25519PrivateKey.generate())


class WebhookSigner:
    """Signs deliveries with the current key; publishes it (and any kept old ones) as a JWKS.

    Thread-safe. Each instance generates its own key pair, so two emulators
    never accept each other's deliveries.

    Args:
        user_id: the user id deliveries are signed for; a random UUID when None.
    """

    def __init__(self, user_id: str | None = None) -> None:
        self._user_id = user_id if user_id is not None else str(uuid.uuid4())
        self._lock = threading.Lock()
        self._current = _new_key()
        self._published: tuple[_Key, ...] = (self._current,)

    def __repr__(self) -> str:
        return f"<WebhookSigner keys={len(self._published)} kid={self._current.kid!r}>"

    @property
    def user_id(self) -> str:
        """The ``X-Fal-Webhook-User-Id`` of every delivery.

        Returns:
            The id.
        """
        return self._user_id

    def rotate(self, keep_old: bool = False) -> str:
        """Sign with a new key from now on and publish it.

        Args:
            keep_old: keep publishing the previous keys (a grace period) instead of dropping them.

        Returns:
            The new key's ``kid``.
        """
        key = _new_key()
        with self._lock:
            self._published = (key, *self._published) if keep_old else (key,)
            self._current = key
        return key.kid

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The published key set, newest first.

        Returns:
            ``{"keys": [{kty, crv, x, kid, use, alg}, ...]}``.
        """
        with self._lock:
            published = self._published
        return {"keys": [key.jwk() for key in published]}

    def headers(self, request_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The four signature headers of one delivery, signed with the current key.

        Args:
            request_id: the queue request id.
            timestamp: epoch seconds.
            body: the exact bytes that will be sent.

        Returns:
            ``X-Fal-Webhook-Request-Id``, ``-User-Id``, ``-Timestamp`` and ``-Signature``.
        """
        with self._lock:
            key = self._current
        stamp = str(timestamp)
        signature = key.private.sign(signed_message(request_id, self._user_id, stamp, body))
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self._user_id,
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": signature.hex(),
        }
