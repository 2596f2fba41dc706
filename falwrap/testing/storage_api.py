"""fal's storage as the emulator answers it: the legacy initiate + PUT upload, the v3 CDN upload
(a token from the REST host, then ``POST /files/upload``, multipart for large files) and file downloads.

Every URL handed out points at the emulator itself, so whatever a client does
with it stays on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import attrs

from falwrap.testing.hosts import Route
from falwrap.testing.messages import Request, Response, json_response
from falwrap.testing.options import OptionError, parse_lifecycle
from falwrap.testing.outputs import new_file_name

if TYPE_CHECKING:
    from falwrap.testing.api import FalApi

__all__ = ["StorageState", "handlers"]

#: How long a CDN upload token is valid.
TOKEN_LIFETIME = timedelta(hours=1)

_DENIED = Response(403, b"<Error><Code>AccessDenied</Code></Error>", (("Content-Type", "application/xml"),))


@attrs.define
class _Multipart:
    file_name: str
    content_type: str
    expires_at: float | None
    parts: dict[int, bytes] = attrs.field(factory=dict)


@attrs.define
class StorageState:
    """Upload state shared by the storage routes. Thread-safe."""

    _upload_names: dict[str, float | None] = attrs.field(factory=dict, init=False)
    _cdn_tokens: set[str] = attrs.field(factory=set, init=False)
    _multipart: dict[str, _Multipart] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def allow_put(self, name: str, expires_at: float | None) -> None:
        """Accept one PUT of ``name`` (a signed upload URL).

        Args:
            name: the file name handed out.
            expires_at: when the uploaded file expires, if it does.
        """
        with self._lock:
            self._upload_names[name] = expires_at

    def take_put(self, name: str) -> tuple[bool, float | None]:
        """Whether ``name`` may be PUT, and the file's expiry.

        Args:
            name: the file name in the URL.

        Returns:
            ``(allowed, expires_at)``.
        """
        with self._lock:
            if name not in self._upload_names:
                return False, None
            return True, self._upload_names[name]

    def new_token(self) -> str:
        """Issue a CDN upload token.

        Returns:
            The token.
        """
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._cdn_tokens.add(token)
        return token

    def token_ok(self, authorization: str) -> bool:
        """Whether ``Authorization`` carries a token this storage issued.

        Args:
            authorization: the header value.

        Returns:
            True for ``Bearer <issued token>``.
        """
        with self._lock:
            return authorization.startswith("Bearer ") and authorization[7:] in self._cdn_tokens

    def start_multipart(self, name: str, content_type: str, expires_at: float | None) -> str:
        """Begin a multipart upload of ``name``.

        Args:
            name: the file name handed out.
            content_type: the file's media type.
            expires_at: when the completed file expires, if it does.

        Returns:
            The upload id.
        """
        upload_id = secrets.token_hex(12)
        with self._lock:
            self._multipart[upload_id] = _Multipart(name, content_type, expires_at)
        return upload_id

    def add_part(self, upload_id: str, name: str, number: int, data: bytes) -> bool:
        """Store one part (a part sent again replaces the earlier one).

        Args:
            upload_id: the upload.
            name: the file name in the URL (must match the upload's).
            number: the part number, from 1.
            data: the part's bytes.

        Returns:
            False for an unknown upload or a name that does not match.
        """
        with self._lock:
            upload = self._multipart.get(upload_id)
            if upload is None or upload.file_name != name:
                return False
            upload.parts[number] = data
            return True

    def finish_multipart(self, upload_id: str, name: str, listed: list[tuple[int, str]]) -> _Multipart | str:
        """Check the client's part list against the parts received and close the upload.

        Args:
            upload_id: the upload.
            name: the file name in the URL.
            listed: ``(partNumber, etag)`` pairs the client sent.

        Returns:
            The completed upload, or why it cannot complete.
        """
        with self._lock:
            upload = self._multipart.get(upload_id)
            if upload is None or upload.file_name != name:
                return "unknown upload"
            # fal_client lists parts in the order their uploads finished, not by number.
            numbers = sorted(number for number, _ in listed)
            if not numbers or numbers != sorted(upload.parts) or numbers != list(range(1, len(numbers) + 1)):
                return f"parts {numbers} do not match the parts uploaded {sorted(upload.parts)}"
            for number, etag in listed:
                if etag.strip('"') != etag_of(upload.parts[number]):
                    return f"part {number}: etag {etag!r} does not match"
            del self._multipart[upload_id]
            return upload


def etag_of(data: bytes) -> str:
    """The ETag of a stored part (its MD5, as S3-style stores answer).

    Args:
        data: the bytes.

    Returns:
        The hex digest.
    """
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _spec(request: Request) -> dict[str, Any] | None:
    try:
        spec = request.json()
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def _initiation(api: FalApi, request: Request) -> tuple[str, dict[str, Any], float | None] | Response:
    """An upload's new file name, its ``{file_name, content_type}`` body and its expiry, or the error answer."""
    spec = _spec(request)
    if spec is None:
        return json_response(422, {"detail": "Body must be {file_name, content_type}"})
    expires_at = _expiry(api, request)
    if isinstance(expires_at, Response):
        return expires_at
    return new_file_name(spec.get("file_name")), spec, expires_at


def _expiry(api: FalApi, request: Request) -> float | Response | None:
    # Storage calls name the preference X-Fal-Object-Lifecycle-Preference, CDN calls X-Fal-Object-Lifecycle.
    header = "x-fal-object-lifecycle-preference"
    if header not in request.headers:
        header = "x-fal-object-lifecycle"
    try:
        seconds = parse_lifecycle(request.headers.get(header))
    except OptionError as exc:
        return json_response(400, {"detail": str(exc)})
    return None if seconds is None else api.clock() + api.behaviour.real_seconds(seconds)


def _file(api: FalApi, route: Route, request: Request) -> Response:
    found = api.files.get(route.tail)
    if found is None:
        return json_response(404, {"detail": "File not found"})
    content_type, data = found
    return Response(200, data, (("Content-Type", content_type),))


def _initiate(api: FalApi, route: Route, request: Request) -> Response:
    initiation = _initiation(api, request)
    if isinstance(initiation, Response):
        return initiation
    name, _, expires_at = initiation
    api.storage.allow_put(name, expires_at)
    base = api.base_url()
    return json_response(200, {"upload_url": f"{base}/storage/upload/put/{name}", "file_url": f"{base}/files/{name}"})


def _initiate_multipart(api: FalApi, route: Route, request: Request) -> Response:
    initiation = _initiation(api, request)
    if isinstance(initiation, Response):
        return initiation
    name, spec, expires_at = initiation
    content_type = str(spec.get("content_type") or "application/octet-stream")
    upload_id = api.storage.start_multipart(name, content_type, expires_at)
    base = api.base_url()
    return json_response(
        200, {"upload_url": f"{base}/files/{name}/multipart/{upload_id}", "file_url": f"{base}/files/{name}"}
    )


def _put(api: FalApi, route: Route, request: Request) -> Response:
    allowed, expires_at = api.storage.take_put(route.tail)
    if not allowed:
        return _DENIED
    content_type = request.headers.get("content-type", "application/octet-stream")
    api.files.put(route.tail, content_type, request.body, expires_at)
    return Response(200)


def _token(api: FalApi, route: Route, request: Request) -> Response:
    expires = datetime.now(timezone.utc) + TOKEN_LIFETIME
    payload = {
        "token": api.storage.new_token(),
        "token_type": "Bearer",
        "base_url": api.base_url(),
        "expires_at": expires.isoformat(),
    }
    return json_response(200, payload)


def _cdn_authorized(api: FalApi, request: Request) -> bool:
    return api.storage.token_ok(request.headers.get("authorization", "")) or api.authorized(request)


def _cdn_file(api: FalApi, request: Request) -> tuple[str, str, float | None] | Response:
    """A CDN upload's new file name, content type and expiry, or the error answer."""
    if not _cdn_authorized(api, request):
        return json_response(401, {"detail": "Unauthorized"})
    expires_at = _expiry(api, request)
    if isinstance(expires_at, Response):
        return expires_at
    content_type = request.headers.get("content-type", "application/octet-stream")
    return new_file_name(request.headers.get("x-fal-file-name")), content_type, expires_at


def _cdn_upload(api: FalApi, route: Route, request: Request) -> Response:
    file = _cdn_file(api, request)
    if isinstance(file, Response):
        return file
    name, content_type, expires_at = file
    api.files.put(name, content_type, request.body, expires_at)
    return json_response(200, {"access_url": f"{api.base_url()}/files/{name}", "content_type": content_type})


def _multipart_create(api: FalApi, route: Route, request: Request) -> Response:
    file = _cdn_file(api, request)
    if isinstance(file, Response):
        return file
    name, content_type, expires_at = file
    upload_id = api.storage.start_multipart(name, content_type, expires_at)
    return json_response(200, {"access_url": f"{api.base_url()}/files/{name}", "uploadId": upload_id})


def _multipart_part(api: FalApi, route: Route, request: Request) -> Response:
    name, number = route.tail.rsplit("/", 1)
    if not api.storage.add_part(route.request_id, name, int(number), request.body):
        return _DENIED
    etag = etag_of(request.body)
    # fal_client reads the ETag header, @fal-ai/client the JSON body.
    return json_response(200, {"partNumber": int(number), "etag": etag}, [("ETag", f'"{etag}"')])


def _multipart_complete(api: FalApi, route: Route, request: Request) -> Response:
    spec = _spec(request)
    parts = spec.get("parts") if spec is not None else None
    listed: list[tuple[int, str]] = []
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("partNumber"), int):
                listed.append((part["partNumber"], str(part.get("etag", ""))))
    done = api.storage.finish_multipart(route.request_id, route.tail, listed)
    if isinstance(done, str):
        return json_response(400, {"detail": f"Cannot complete the multipart upload: {done}"})
    data = b"".join(done.parts[number] for number in sorted(done.parts))
    api.files.put(done.file_name, done.content_type, data, done.expires_at)
    return json_response(200, {"access_url": f"{api.base_url()}/files/{done.file_name}"})


#: action -> handler.  ``file``, ``upload_put`` and the CDN routes check their own credentials.
handlers = {
    "file": _file,
    "upload_initiate": _initiate,
    "upload_initiate_multipart": _initiate_multipart,
    "upload_put": _put,
    "upload_token": _token,
    "upload_cdn": _cdn_upload,
    "multipart_create": _multipart_create,
    "multipart_part": _multipart_part,
    "multipart_complete": _multipart_complete,
}
