"""Local inputs up to fal, generated outputs down to disk.

Downloads stream with ``requests`` into an anonymous spool file (unlinked from
the start, so the kernel reclaims it however the process dies, ``SIGKILL``
included). Only a complete body of the announced size is published: copied
to a hidden temporary name beside the target and renamed into place, so a
reader never sees a half-written output. 5xx answers, 429s, connection errors
and short bodies are retried within the download's deadline; the deadline
also bounds a server that trickles bytes. An output that came back as a
``data:`` URI (image models asked for ``sync_mode``) is decoded and published
the same way, named by its media type.

Downloads never carry the fal key: output URLs are public, and sending a
credential to whatever host a result names would leak it.

Uploads: a local path given where fal expects a URL travels inline as a
``data:`` URI when small, or goes through fal's storage (``FalClient.upload``).
The file is checked first (exists, readable, of the expected media type) so a
typo fails locally with :class:`~falwrap.InvalidInputError`, before any HTTP.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

import requests
import urllib3

from falwrap import retry as _retry
from falwrap.data_uris import data_uri_media_type, describe_data_uri, is_data_uri, parse_data_uri
from falwrap.errors import (
    FalApiError,
    FalConnectionError,
    FalTimeoutError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from falwrap.responses import parse_retry_after
from falwrap.retry import RetryPolicy

if TYPE_CHECKING:
    from falwrap.retry import RetryHook

__all__ = [
    "DATA_URI_MAX_BYTES",
    "download",
    "image_input",
    "media_input",
    "save_data_uri",
    "save_outputs",
    "sniff_media_type",
]

#: Inputs up to this size travel inline as a data URI: one request fewer, and
#: fal accepts data URIs wherever it accepts a URL. Larger files go to storage,
#: because a multi-megabyte JSON body slows every hop and some gateways cap it.
DATA_URI_MAX_BYTES = 256 * 1024

#: Most bytes one read may wait for before the connection counts as stalled.
STALL_TIMEOUT = 30.0

_CHUNK = 256 * 1024

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"ID3", "audio/mpeg"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"\xff\xf3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
)

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "model/gltf-binary": ".glb",
}

#: Content types that say nothing about the file: the URL's suffix is a better guess.
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/unknown"})

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --- inputs --------------------------------------------------------------------------------------


def sniff_media_type(head: bytes) -> str | None:
    """The MIME type of a file from its first bytes (at least 16), or ``None`` when unknown.

    Args:
        head: The first bytes of the file.

    Returns:
        ``image/png``, ``image/jpeg``, ``image/webp``, ``image/gif``, ``image/bmp``,
        ``video/mp4``, ``video/quicktime``, ``video/webm``, ``audio/mpeg``,
        ``audio/wav``, ``audio/flac``, ``audio/ogg``, or ``None``.
    """
    for signature, content_type in _SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    return None


def _expected_kind(field: str) -> str:
    """The media kind a ``*_url`` argument takes, from its name (``image_url``, ``video_url``...)."""
    lowered = field.lower()
    for kind in ("video", "audio"):
        if lowered.startswith(kind) or f"_{kind}" in lowered:
            return kind
    return "image"


_KIND_NAMES = {
    "image": "a PNG, JPEG, WebP, GIF or BMP image",
    "video": "an MP4, MOV or WebM video",
    "audio": "an MP3, WAV, FLAC or Ogg audio file",
}


def media_input(
    value: str | os.PathLike[str],
    *,
    upload: Callable[[bytes, str, str], str],
    field: str,
    kind: str | None = None,
) -> str:
    """Turn a ``*_url`` argument into something fal accepts.

    URLs and data URIs pass through unchanged; a local file is checked, then
    sent inline as a data URI (up to :data:`DATA_URI_MAX_BYTES`) or uploaded.

    Args:
        value: An ``http(s)://`` URL, a ``data:`` URI, a ``file://`` URL or a local path.
        upload: Uploads ``(data, content_type, file_name)`` and returns its URL
            (``FalClient.upload``).
        field: The argument name, for error messages; it also says which media
            kind is expected (``video_url`` takes a video, ``image_url`` an image).
        kind: ``image``, ``video`` or ``audio`` to override what ``field`` implies.

    Returns:
        A URL or a data URI.

    Raises:
        InvalidInputError: the path does not exist, cannot be read, or is not
            a file of the expected kind. Nothing was sent.
        FalApiError: the upload failed after retries.
    """
    given: object = value  # untyped callers pass anything
    if not isinstance(given, (str, os.PathLike)):
        msg = f"{field}: expected a URL or the path of a local file, got {type(given).__name__}."
        raise InvalidInputError(msg, field=field)
    text = os.fsdecode(os.fspath(value)).strip()
    if not text:
        msg = f"{field}: is empty. Pass an http(s) URL, a data: URI or the path of a local file."
        raise InvalidInputError(msg, field=field)
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://", "data:")):
        return text
    path = Path(unquote(urlsplit(text).path) if lowered.startswith("file://") else text).expanduser()
    expected = kind or _expected_kind(field)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = (
            f"{field}: {text!r} is neither a URL nor an existing file. Pass an http(s) URL or the path of a local file."
        )
        raise InvalidInputError(msg, field=field) from None
    except IsADirectoryError:
        msg = f"{field}: {text!r} is a directory. Pass the path of a file in it, or an http(s) URL."
        raise InvalidInputError(msg, field=field) from None
    except ValueError:
        # pathlib refuses a path with a NUL byte: it cannot name a file.
        msg = f"{field}: {text!r} is neither a URL nor a valid file path."
        raise InvalidInputError(msg, field=field) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        msg = f"{field}: cannot read {text!r} ({reason}). Check the path and its permissions."
        raise InvalidInputError(msg, field=field) from None
    content_type = sniff_media_type(data[:16])
    if content_type is None or not content_type.startswith(f"{expected}/"):
        found = f" (it looks like {content_type})" if content_type else ""
        msg = f"{field}: {text!r} is not {_KIND_NAMES.get(expected, expected)}{found}."
        raise InvalidInputError(msg, field=field)
    if len(data) <= DATA_URI_MAX_BYTES:
        return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
    return upload(data, content_type, path.name)


def image_input(value: str | os.PathLike[str], *, upload: Callable[[bytes, str, str], str], field: str) -> str:
    """Turn an argument into something fal accepts, expecting media of the kind ``field`` names.

    Kept for the client's ``*_url`` handling; see :func:`media_input`.

    Args:
        value: An ``http(s)://`` URL, a ``data:`` URI or a local file path.
        upload: Uploads ``(data, content_type, file_name)`` and returns its URL.
        field: The argument name (``image_url`` expects an image, ``video_url`` a video).

    Returns:
        A URL or a data URI.

    Raises:
        InvalidInputError: the path does not exist, cannot be read, or is of the wrong kind.
        FalApiError: the upload failed after retries.
    """
    return media_input(value, upload=upload, field=field)


# --- outputs -------------------------------------------------------------------------------------


def _display(url: str) -> str:
    """The URL without its query: signed links carry tokens that do not belong in messages."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url[:200]
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _extension(content_type: str | None, url: str) -> str:
    base = (content_type or "").split(";")[0].strip().lower()
    if base in _EXTENSIONS:
        return _EXTENSIONS[base]
    suffix = Path(unquote(urlsplit(url).path)).suffix.lower()
    if suffix and 1 < len(suffix) <= 6 and _UNSAFE_NAME.search(suffix[1:]) is None:
        return suffix
    if base and base not in _GENERIC_TYPES:
        guessed = mimetypes.guess_extension(base)
        if guessed:
            return guessed
    return ".bin"


def _known_suffix(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in _EXTENSIONS.values() or suffix in mimetypes.types_map


def _target_name(filename: str | None, url: str, content_type: str | None) -> str:
    if filename is not None:
        if not filename or filename in {".", ".."} or "/" in filename or "\\" in filename or "\0" in filename:
            msg = f"filename: {filename!r} must be a plain file name, without directories."
            raise InvalidInputError(msg, field="filename")
        return filename if _known_suffix(filename) else filename + _extension(content_type, url)
    stem = _UNSAFE_NAME.sub("_", Path(unquote(urlsplit(url).path)).stem).strip("._")[:100] or "output"
    return stem + _extension(content_type, url)


def _http_error(status: int, headers: requests.structures.CaseInsensitiveDict[str], url: str) -> FalApiError:
    where = _display(url)
    if status in {404, 410}:
        msg = (
            f"The file {where} is gone (HTTP {status}). fal keeps generated files for a limited time; "
            "save results soon after generating them, or generate again."
        )
        return NotFoundError(msg, status_code=status, error_code="FILE_NOT_FOUND")
    if status == 429:
        wait = parse_retry_after(headers.get("retry-after"))
        msg = f"Downloading {where} was rate limited (HTTP 429). Wait a moment and try again."
        return RateLimitError(msg, status_code=status, retryable=True, retry_after=wait)
    if status >= 500 or status == 408:
        msg = f"The server holding {where} failed (HTTP {status}). Try again in a minute."
        wait = parse_retry_after(headers.get("retry-after"))
        return ServerError(msg, status_code=status, retryable=True, retry_after=wait)
    msg = f"Could not download {where}: the server answered HTTP {status}. The link may have expired."
    return FalApiError(msg, status_code=status, error_code=f"HTTP_{status}")


def download(
    url: str,
    directory: str | os.PathLike[str],
    *,
    session: requests.Session | None = None,
    filename: str | None = None,
    timeout: float = 60.0,
    policy: RetryPolicy | None = None,
    content_type: str | None = None,
    chunk_size: int = _CHUNK,
    hooks: tuple[RetryHook, ...] = (),
) -> Path:
    """Download ``url`` into ``directory`` atomically and return the file's path.

    The file appears under its final name only once complete and of the size
    the server announced (``Content-Length``); an existing file of that name
    is replaced. Killing the process at any point leaves no partial file.
    A ``data:`` URI is decoded instead, without HTTP, and published the same way.
    Thread-safe (give each thread its own ``session`` or share one).

    Args:
        url: The file to fetch (no credentials are sent), or a ``data:`` URI.
        directory: Where to put it (created if missing).
        session: The ``requests.Session`` to use (one is made if ``None``).
        filename: The file name; without a known extension, the extension
            of the content type is added. Default: the URL's file name.
        timeout: Deadline for the whole download, retries included, in seconds.
        policy: Retry policy for 5xx, 429, connection errors and short bodies
            (default: 3 retries, exponential backoff).
        content_type: The type the result announced, used when the server
            sends none (or a generic one).
        chunk_size: Bytes per read.
        hooks: Told about each retry (phase ``download``), like every other phase's.

    Returns:
        The path of the file written.

    Raises:
        InvalidInputError: ``filename`` is not a plain file name.
        ServerError: a ``data:`` URI that cannot be decoded (``error_code`` ``MALFORMED_DATA_URI``).
        NotFoundError: the file is gone (404/410).
        FalApiError: another error answer, or 5xx/429/connection failures after retries.
        FalTimeoutError: the deadline passed; nothing was written.
        OSError: the directory cannot be created or written.
    """
    if filename is not None:
        _target_name(filename, url, content_type)  # fail on a bad name before any HTTP
    if is_data_uri(url):
        return save_data_uri(url, directory, filename=filename)
    own_session = session is None
    http = session if session is not None else requests.Session()
    deadline = time.monotonic() + timeout
    target_dir = Path(directory).expanduser()
    target_dir.mkdir(parents=True, exist_ok=True)

    def classify(exc: BaseException, attempts: int) -> tuple[str, FalApiError] | None:
        if isinstance(exc, FalApiError):
            exc.attempts = attempts
            return ("download", exc) if not isinstance(exc, FalTimeoutError) else None
        return None

    try:
        return _retry.retrying(
            lambda: _download_once(http, url, target_dir, filename, content_type, deadline, timeout, chunk_size),
            policy=policy if policy is not None else RetryPolicy(),
            classify=classify,
            deadline=deadline,
            hooks=hooks,
        )
    finally:
        if own_session:
            http.close()


def save_data_uri(uri: str, directory: str | os.PathLike[str], *, filename: str | None = None) -> Path:
    """Decode a ``data:`` URI into ``directory`` atomically and return the file's path.

    Args:
        uri: The data URI (base64 or percent-encoded).
        directory: Where to put it (created if missing).
        filename: The file name; without a known extension, the extension of the
            URI's media type is added. Default: ``output`` and that extension.

    Returns:
        The path of the file written.

    Raises:
        InvalidInputError: ``filename`` is not a plain file name.
        ServerError: the URI cannot be decoded (``error_code`` ``MALFORMED_DATA_URI``); nothing was written.
        OSError: the directory cannot be created or written.
    """
    try:
        decoded = parse_data_uri(uri)
    except ValueError as exc:
        msg = (
            f"The output {describe_data_uri(uri)} is not a valid data: URI ({exc}); nothing was saved. "
            "The answer may have been damaged on the way: generate again, and report it to fal if it persists."
        )
        raise ServerError(msg, error_code="MALFORMED_DATA_URI") from exc
    target_dir = Path(directory).expanduser()
    target_dir.mkdir(parents=True, exist_ok=True)
    final = target_dir / _target_name(filename, "output", decoded.media_type)
    _publish(io.BytesIO(decoded.data), final)
    return final


def _timed_out(url: str, timeout: float) -> FalTimeoutError:
    msg = (
        f"Downloading {_display(url)} did not finish within {timeout:g} s; nothing was saved. "
        "Check the network and try again."
    )
    return FalTimeoutError(msg)


def _cut_short(url: str, received: int, expected: str) -> FalConnectionError:
    msg = f"The download of {_display(url)} was cut short: got {received} of {expected} bytes. Try again."
    return FalConnectionError(msg, error_code="INCOMPLETE_DOWNLOAD", retryable=True)


def _download_once(
    http: requests.Session,
    url: str,
    directory: Path,
    filename: str | None,
    content_type: str | None,
    deadline: float,
    timeout: float,
    chunk_size: int,
) -> Path:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timed_out(url, timeout)
    read_timeout = min(remaining, STALL_TIMEOUT)
    try:
        # identity: the bytes on disk are the bytes fal stored, and Content-Length counts them.
        response = http.get(
            url, stream=True, timeout=(min(remaining, 10.0), read_timeout), headers={"Accept-Encoding": "identity"}
        )
    except requests.RequestException as exc:
        if time.monotonic() >= deadline:
            raise _timed_out(url, timeout) from exc
        msg = f"Could not download {_display(url)}: the connection failed ({type(exc).__name__}). Try again."
        raise FalConnectionError(msg, retryable=True) from exc
    with response:
        if response.status_code >= 400:
            raise _http_error(response.status_code, response.headers, url)
        announced = response.headers.get("content-type")
        if not announced or announced.split(";")[0].strip().lower() in _GENERIC_TYPES:
            announced = content_type or announced
        final = directory / _target_name(filename, url, announced)
        expected = response.headers.get("content-length", "").strip()
        # Anonymous and unlinked from the start: nothing is left behind if we are killed.
        with tempfile.TemporaryFile(dir=directory) as spool:
            try:
                for chunk in _chunks(response, chunk_size):
                    spool.write(chunk)
                    if time.monotonic() > deadline:
                        raise _timed_out(url, timeout)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise _timed_out(url, timeout) from exc
                # urllib3 notices a body shorter than Content-Length itself; say so plainly.
                if expected.isdigit() and spool.tell() < int(expected):
                    raise _cut_short(url, spool.tell(), expected) from exc
                msg = f"The download of {_display(url)} broke off ({type(exc).__name__}). Try again."
                raise FalConnectionError(msg, retryable=True) from exc
            # A compressed body (if a server ignores "identity") is counted on the wire, not on disk.
            encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
            received = response.raw.tell() if encoded else spool.tell()
            if expected.isdigit() and received != int(expected):
                raise _cut_short(url, received, expected)
            _publish(spool, final)
    return final


def _chunks(response: requests.Response, chunk_size: int) -> Iterator[bytes]:
    """The body as it arrives.

    ``read1`` returns whatever one socket read brings, so the deadline check
    between chunks also catches a server that trickles a byte at a time
    (``iter_content`` would wait to fill a whole chunk, however long that takes).
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(chunk_size)
        return
    while chunk := read1(chunk_size):
        yield chunk


def _publish(spool: IO[bytes], final: Path) -> None:
    """Copy the finished spool to a hidden name beside ``final``, then rename it into place."""
    spool.flush()
    spool.seek(0)
    part = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.part")
    # 0o666 and the process umask: the same mode any other new file would get.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(spool, out, _CHUNK)
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)


class Downloader(Protocol):
    """Something that downloads one file into a directory (a :class:`~falwrap.FalClient` does)."""

    def download(self, url: str, directory: str | Path = ".", *, filename: str | None = None) -> Path:
        """Download ``url`` into ``directory`` and return the file's path."""
        ...


def save_outputs(
    client: Downloader | None,
    outputs: Sequence[tuple[str, str | None]],
    directory: str | os.PathLike[str],
    prefix: str,
) -> list[Path]:
    """Download each ``(url, content_type)`` of a result into ``directory``.

    Args:
        client: Downloads through ``client.download`` (its routing, session and
            deadline) when given; else a plain :func:`download`.
        outputs: The result's files and their announced content types.
        directory: Where to write them (created if missing).
        prefix: The file name stem: ``prefix`` for one file, ``prefix-0``,
            ``prefix-1``... for several.

    Returns:
        The paths written, in the order of ``outputs``.

    Raises:
        FalApiError: a download failed after retries (files already saved stay).
        FalTimeoutError: a download passed its deadline.
        OSError: the directory cannot be created or written.
    """
    paths = []
    for index, (url, announced) in enumerate(outputs):
        content_type, named_by = announced, url
        if is_data_uri(url):
            # Its own media type names the file better than the result's field; its payload names nothing.
            content_type, named_by = data_uri_media_type(url) or announced, ""
        name = prefix if len(outputs) == 1 else f"{prefix}-{index}"
        name += _extension(content_type, named_by) if content_type else ""
        if client is not None:
            paths.append(client.download(url, Path(directory), filename=name))
        else:
            paths.append(download(url, directory, filename=name, content_type=content_type))
    return paths
