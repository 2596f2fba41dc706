"""fal's webhook public keys: a JWKS fetched with requests, cached a day, refetched at most once a minute."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import cachetools
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["JWKS_TTL_S", "MAX_JWKS_BYTES", "MIN_FETCH_INTERVAL_S", "JwksKeyStore", "JwksUnavailable", "KeySet"]

logger = logging.getLogger("falwrap.webhooks")

#: How long fetched keys are trusted without asking again. fal rotates keys rarely,
#: and a delivery signed with a key newer than the cache triggers a refetch anyway.
JWKS_TTL_S = 24 * 3600.0

#: Minimum time between two fetches of one JWKS URL, whatever triggers them: a burst
#: of forged deliveries, or a JWKS endpoint that is down, costs one request a minute.
MIN_FETCH_INTERVAL_S = 60.0

#: Connect-and-read timeout of one JWKS request, in seconds.
FETCH_TIMEOUT_S = 10.0

#: A JWKS is a few hundred bytes; anything far larger is not a key set.
MAX_JWKS_BYTES = 64 * 1024

#: Raw Ed25519 public keys are 32 bytes.
_KEY_BYTES = 32


class JwksUnavailable(Exception):
    """The key set could not be fetched (network, HTTP status, not a JWKS) or may not be fetched yet."""


@attrs.frozen
class KeySet:
    """The Ed25519 keys one fetch of a JWKS produced.

    Attributes:
        keys: the usable public keys, in the order the JWKS lists them.
        raw: their raw 32-byte encodings, to tell whether a later fetch brought a new key.
    """

    keys: tuple[Ed25519PublicKey, ...]
    raw: frozenset[bytes]

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether any key verifies ``signature`` over ``message``.

        Args:
            signature: 64 bytes.
            message: the signed bytes.

        Returns:
            True when one key verifies it.
        """
        for key in self.keys:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False


def parse_jwks(document: Any) -> KeySet:
    """The Ed25519 keys of a JWKS document; keys of other types and malformed entries are skipped.

    Args:
        document: the parsed JSON.

    Returns:
        The key set (possibly empty).

    Raises:
        JwksUnavailable: when the document is not ``{"keys": [...]}``.
    """
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        msg = 'the answer is not a JWKS (expected a JSON object with a "keys" list)'
        raise JwksUnavailable(msg)
    keys: list[Ed25519PublicKey] = []
    raw: list[bytes] = []
    for entry in entries:
        encoded = _ed25519_x(entry)
        if encoded is None or encoded in raw:
            continue
        keys.append(Ed25519PublicKey.from_public_bytes(encoded))
        raw.append(encoded)
    return KeySet(tuple(keys), frozenset(raw))


def _ed25519_x(entry: Any) -> bytes | None:
    if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
        return None
    if entry.get("use", "sig") != "sig" or not isinstance(entry.get("x"), str):
        return None
    text: str = entry["x"]
    try:
        # base64url without padding (RFC 7517); restore the padding the decoder needs.
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == _KEY_BYTES else None


class JwksKeyStore:
    """The keys published at one JWKS URL, fetched on first use and cached for ``JWKS_TTL_S``.

    Thread-safe. Fetches are serialised and at least ``MIN_FETCH_INTERVAL_S``
    apart; readers of cached keys never wait for a fetch in progress.

    Args:
        url: the JWKS URL.
        session: the ``requests.Session`` to fetch with; a new one when None.
        clock: a monotonic clock in seconds (the cache's age and the fetch interval).
    """

    def __init__(
        self, url: str, *, session: requests.Session | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._url = url
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._cache: cachetools.TTLCache[str, KeySet] = cachetools.TTLCache(maxsize=1, ttl=JWKS_TTL_S, timer=clock)
        # _state guards the cache and counters; _fetching serialises network fetches so
        # that a slow JWKS endpoint never blocks a verification that has its keys cached.
        self._state = threading.Lock()
        self._fetching = threading.Lock()
        self._last_attempt: float | None = None
        self._fetches = 0

    def __repr__(self) -> str:
        return f"<JwksKeyStore url={self._url!r} fetches={self.fetches}>"

    @property
    def url(self) -> str:
        """The JWKS URL.

        Returns:
            The URL.
        """
        return self._url

    @property
    def fetches(self) -> int:
        """JWKS requests made so far, failed ones included.

        Returns:
            The count.
        """
        with self._state:
            return self._fetches

    def current(self) -> KeySet:
        """The cached keys, fetched first when there are none (or they are older than a day).

        Returns:
            The key set.

        Raises:
            JwksUnavailable: the fetch failed, or the last attempt failed less than a minute ago.
        """
        with self._state:
            cached = self._cache.get(self._url)
        if cached is not None:
            return cached
        with self._fetching:
            with self._state:
                cached = self._cache.get(self._url)
                wait = self._wait_locked()
            if cached is not None:
                return cached
            if wait > 0:
                msg = f"the last attempt to fetch it failed; the next one is allowed in {wait:.0f} s"
                raise JwksUnavailable(msg)
            return self._fetch()

    def newer_than(self, tried: KeySet) -> KeySet | None:
        """Keys other than ``tried``, for a signature none of them verified (keys may have rotated).

        Fetches again only when the last fetch is at least ``MIN_FETCH_INTERVAL_S``
        old; a fetch another thread made meanwhile is used instead.

        Args:
            tried: the keys the signature failed against.

        Returns:
            A key set that differs from ``tried``, or None when there is none (yet).
        """
        with self._fetching:
            with self._state:
                cached = self._cache.get(self._url)
                wait = self._wait_locked()
            if cached is not None and cached.raw != tried.raw:
                return cached
            if wait > 0:
                return None
            try:
                fetched = self._fetch()
            except JwksUnavailable as exc:
                logger.warning("Could not refetch the webhook keys from %s: %s", self._url, exc)
                return None
            return fetched if fetched.raw != tried.raw else None

    def _wait_locked(self) -> float:
        if self._last_attempt is None:
            return 0.0
        return max(0.0, self._last_attempt + MIN_FETCH_INTERVAL_S - self._clock())

    def _fetch(self) -> KeySet:
        # Runs under _fetching only: the network wait must not hold _state.
        with self._state:
            self._last_attempt = self._clock()
            self._fetches += 1
        try:
            with self._session.get(
                self._url, timeout=FETCH_TIMEOUT_S, stream=True, headers={"Accept": "application/json"}
            ) as response:
                if response.status_code != requests.codes.ok:
                    msg = f"it answered HTTP {response.status_code}"
                    raise JwksUnavailable(msg)
                document = json.loads(_read_limited(response.iter_content(8192)))
        except requests.RequestException as exc:
            msg = f"the request failed ({type(exc).__name__}: {exc})"
            raise JwksUnavailable(msg) from exc
        except ValueError as exc:
            msg = "the answer is not JSON"
            raise JwksUnavailable(msg) from exc
        keys = parse_jwks(document)
        with self._state:
            self._cache[self._url] = keys
        logger.info("Fetched %d webhook key(s) from %s", len(keys.keys), self._url)
        return keys


def _read_limited(chunks: Iterable[bytes]) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_JWKS_BYTES:
            msg = f"the answer is larger than {MAX_JWKS_BYTES} bytes"
            raise JwksUnavailable(msg)
    return bytes(data)
