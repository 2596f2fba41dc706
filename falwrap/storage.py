"""Uploads to fal's storage: the v3 CDN first, the legacy storage when v3 is unavailable.

fal has two storages, and fal_client speaks both:

* ``fal_v3`` (fal_client's default): a CDN token from ``rest.fal.ai``, then
  ``POST /files/upload`` on the CDN host the token names; above 100 MB a
  multipart upload instead (create, parts sent in parallel, complete).
* ``fal`` (legacy): ``rest.fal.ai`` initiates an upload and answers a signed
  URL, which takes the bytes in one PUT.

:class:`Uploader` runs fal_client's own code for each, on HTTP clients built
over falwrap's transport: every exchange (the token, the CDN upload, each
part, the legacy initiate and PUT) is routed like any other, bounded by the
upload's deadline (multipart parts too, although fal_client sends them from
its own threads) and never retried behind falwrap's back. The whole upload is
one phase, ``upload``, of falwrap's one retry loop.

When the v3 path fails for a reason of its own (see :func:`v3_unavailable`)
the same attempt uploads to the legacy storage instead, and so do that
upload's retries. A failure about the file itself is not retried elsewhere.
The CDN token is shared by the uploads of one client until shortly before it
expires, or until the CDN refuses it.

The fal key goes to fal's REST host only (the token, the legacy initiate): the
CDN gets the token, and the signed URL of a legacy upload, like an output URL,
gets no credential at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import attrs
import fal_client
import httpx
from fal_client.client import CDNToken, FalClientHTTPError

from falwrap.errors import FalTimeoutError
from falwrap.following import DeadlinePassed
from falwrap.transport import Budget, ExchangeError, PinnedBudget, transport_of

__all__ = ["TOKEN_URL", "CdnTokens", "Uploader", "v3_unavailable"]

logger = logging.getLogger("falwrap")

#: Where fal hands out CDN upload tokens (fal_client asks the same URL).
TOKEN_URL = "https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3"

#: A token this close to its expiry is renewed first: a multipart upload asks for it once per part.
TOKEN_MARGIN = timedelta(minutes=2)

#: Answers of the v3 path that say v3 cannot take the upload now, whatever the file:
#: its token service or CDN refused our key or token (401, 403), is not served where the
#: request went (404, 405: a proxy that only knows the legacy storage), timed out on
#: the request (408) or is rate limited or down (429, 5xx).
_V3_STATUSES = frozenset({401, 403, 404, 405, 408, 429})

Exchange = Callable[..., Any]

#: fal_client's names of the two storages.
Repository = Literal["fal_v3", "fal"]


def v3_unavailable(exc: BaseException) -> bool:
    """Whether a failure of the v3 path is v3's own, so the legacy storage may well succeed.

    Falls back: no answer at all (connection refused or reset, a timeout), the
    statuses in ``_V3_STATUSES`` and every 5xx, and an answer that cannot be read
    (a token or upload answer without its fields, or a redirect, which falwrap's
    transport passes through and fal_client refuses). The legacy storage is a
    different service behind a different host, so none of these says anything
    about it.

    Does not fall back: any other 4xx (400, 413, 415, 422...), which is about the
    file itself (its size, type or name) and would be refused by either storage;
    and a passed deadline, which leaves no time for a second storage.

    Args:
        exc: What the v3 attempt raised.

    Returns:
        ``True`` when the upload should go to the legacy storage.
    """
    if isinstance(exc, ExchangeError):
        if exc.response is None:
            return True
        status = exc.response.status_code
        return status in _V3_STATUSES or status >= 500
    return isinstance(exc, (KeyError, ValueError, TypeError, FalClientHTTPError))


def _parse_expiry(value: Any) -> datetime:
    text = str(value)
    # fromisoformat reads a trailing "Z" only from Python 3.11 on.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


class CdnTokens:
    """fal's CDN upload token, fetched when needed and shared by every upload of a client. Thread-safe.

    Args:
        now: The current aware UTC time.
    """

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._now = now
        self._token: CDNToken | None = None
        # Held during a fetch, as fal_client's token manager does: concurrent uploads share one token.
        self._lock = threading.Lock()

    def get(self, http: httpx.Client, authorization: str) -> CDNToken:
        """The current token, fetched through ``http`` when there is none or it is about to expire.

        Args:
            http: The client to ask fal's token service with.
            authorization: The ``Authorization`` header carrying the fal key.

        Raises:
            ExchangeError: the token service failed.
            KeyError, ValueError, TypeError: its answer lacks a field or cannot be read.
        """
        with self._lock:
            token = self._token
            if token is None or token.expires_at - TOKEN_MARGIN <= self._now():
                token = self._fetch(http, authorization)
                self._token = token
            return token

    def forget(self) -> None:
        """Drop the token (the CDN refused it): the next upload fetches a new one."""
        with self._lock:
            self._token = None

    @staticmethod
    def _fetch(http: httpx.Client, authorization: str) -> CDNToken:
        headers = {"Authorization": authorization, "Accept": "application/json"}
        data = http.post(TOKEN_URL, json={}, headers=headers).json()
        return CDNToken(
            token=str(data["token"]),
            token_type=str(data["token_type"]),
            base_upload_url=str(data["base_url"]).rstrip("/"),
            expires_at=_parse_expiry(data["expires_at"]),
        )


@attrs.frozen
class _TokenView:
    """What fal_client's upload code calls a token manager: the client's tokens, fetched through ``http``."""

    tokens: CdnTokens
    http: httpx.Client
    authorization: str = attrs.field(repr=False)

    def get_token(self) -> CDNToken:
        return self.tokens.get(self.http, self.authorization)


class _StorageClient(fal_client.SyncClient):
    """fal_client's SyncClient for one upload attempt: its REST and CDN clients are falwrap's.

    SyncClient is a frozen dataclass whose HTTP client and token manager are cached
    properties; presetting the caches is how they are replaced. The CDN client is
    fal_client's one method that builds a client of its own, hence the override.
    """

    def __init__(self, key: str, rest: httpx.Client, cdn: httpx.Client, tokens: CdnTokens) -> None:
        super().__init__(key=key)
        view = _TokenView(tokens, rest, self._auth.header_value)
        self.__dict__.update(_client=rest, _token_manager=view, _falwrap_cdn=cdn)

    def _get_cdn_client(self) -> httpx.Client:
        token = self._token_manager.get_token()
        cdn: httpx.Client = self.__dict__["_falwrap_cdn"]
        cdn.headers["Authorization"] = f"{token.token_type} {token.token}"
        return cdn

    def __repr__(self) -> str:
        return "_StorageClient(key=<hidden>)"


class Uploader:
    """Uploads bytes to fal's storage (``FalClient.upload``). Thread-safe.

    Args:
        http: The client's HTTP client, made by ``build_http_client``: its transport
            (routing, deadlines) and its headers (the key, the user agent) are reused.
        api_key: The fal key (the legacy storage sends it with the initiate request).
        exchange: The runner's exchange loop (``JobRunner.exchange``): falwrap's one
            retry loop, which classifies failures and retries them as phase ``upload``.
        clock: The monotonic clock the runner's deadlines use.
        timeout: Deadline of one upload, retries and fallback included, in seconds.
    """

    def __init__(
        self,
        http: httpx.Client,
        api_key: str,
        *,
        exchange: Exchange,
        clock: Callable[[], float],
        timeout: float,
    ) -> None:
        self._transport = transport_of(http)
        # No default Authorization: fal_client adds the key to the legacy initiate request
        # itself, and the signed URL the bytes are PUT to (a storage host), like the CDN
        # (which gets its own token), must never see the fal key.
        self._headers = {"User-Agent": http.headers.get("user-agent", "falwrap")}
        self._http_timeout = http.timeout
        self._api_key = api_key
        self._exchange = exchange
        self._clock = clock
        self._timeout = timeout
        self.tokens = CdnTokens()

    def __repr__(self) -> str:
        return f"<Uploader timeout={self._timeout:g}s key=<hidden>>"

    def upload(self, data: bytes, content_type: str, file_name: str) -> str:
        """Upload ``data`` and return its URL: to storage v3, else the legacy storage.

        Args:
            data: The file's bytes (above 100 MB they go up in parts).
            content_type: Its media type.
            file_name: The name fal stores it under.

        Returns:
            The file's URL at fal.

        Raises:
            FalTimeoutError: the upload did not finish within its deadline.
            FalApiError: the upload failed after retries (or at once for an error about the file).
        """
        deadline = self._clock() + self._timeout
        use_v3 = [True]

        def attempt() -> str:
            with self._session(Budget(deadline, None, self._clock)) as fal:
                if use_v3[0]:
                    try:
                        return self._send(fal, "fal_v3", data, content_type, file_name)
                    except Exception as exc:
                        if not v3_unavailable(exc):
                            raise
                        use_v3[0] = False
                        self._fell_back(exc)
                return self._send(fal, "fal", data, content_type, file_name)

        try:
            url: str = self._exchange("upload", attempt, endpoint=None, request_id=None, deadline=deadline)
        except DeadlinePassed as exc:
            msg = (
                f"Uploading {file_name!r} ({len(data)} bytes) did not finish within {self._timeout:g} s. "
                "Check the network, or raise FAL_TIMEOUT_IMAGE for large files."
            )
            raise FalTimeoutError(msg) from exc
        return url

    def _session(self, limits: Budget) -> _Session:
        view = PinnedBudget(self._transport, limits)
        rest = httpx.Client(
            transport=view, headers=self._headers, timeout=self._http_timeout, follow_redirects=True,
            trust_env=False,
        )  # fmt: skip
        cdn = httpx.Client(transport=view, headers=self._headers, timeout=self._http_timeout, trust_env=False)
        return _Session(_StorageClient(self._api_key, rest, cdn, self.tokens), (rest, cdn))

    @staticmethod
    def _send(
        fal: fal_client.SyncClient, repository: Repository, data: bytes, content_type: str, file_name: str
    ) -> str:
        # An empty fallback list: falwrap decides what falls back, not fal_client (which would on anything).
        return fal.upload(data, content_type, file_name, repository=repository, fallback_repository=[])

    def _fell_back(self, exc: BaseException) -> None:
        if isinstance(exc, ExchangeError) and exc.response is not None and exc.response.status_code in {401, 403}:
            self.tokens.forget()
        reason = str(exc) if isinstance(exc, ExchangeError) else repr(exc)
        logger.warning("[falwrap] upload to fal's storage v3 failed (%s); uploading to the legacy storage", reason)


@attrs.frozen
class _Session:
    """A storage client for one attempt and the HTTP clients it closes after."""

    fal: _StorageClient
    clients: tuple[httpx.Client, ...]

    def __enter__(self) -> _StorageClient:
        return self.fal

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
