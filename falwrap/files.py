"""Local inputs up to fal, generated outputs down to disk.

Downloads stream with ``requests`` into a temporary file in the target
directory and are renamed into place only when complete and of the size the
server announced, so an interrupted download never leaves a partial file.
Transient failures (5xx, connection errors) are retried within the deadline.

Uploads: a local path given where fal expects a URL is sent as a ``data:``
URI when small, or uploaded through fal's storage with fal_client.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from falwrap import retry as _retry
from falwrap.errors import FalApiError, FalConnectionError, FalTimeoutError, InvalidInputError, error_from_response
from falwrap.retry import RetryPolicy

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["DATA_URI_MAX_BYTES", "download", "image_input", "save_outputs"]

#: Inputs up to this size travel inline as a data URI: one request fewer, and
#: fal accepts data URIs wherever it accepts a URL. Larger files go to storage.
DATA_URI_MAX_BYTES = 256 * 1024

_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
}


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes, or ``None`` if it is not one we know."""
    for signature, content_type in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_input(value: str | os.PathLike[str], *, upload: Callable[[bytes, str, str], str], field: str) -> str:
    """Turn an image argument into something fal accepts: a URL or data URI as is, a local file uploaded.

    Args:
        value: An ``http(s)://`` URL, a ``data:`` URI, or a local file path.
        upload: Uploads ``(data, content_type, file_name)`` and returns its URL.
        field: The argument name, for error messages.

    Raises:
        InvalidInputError: the path does not exist, cannot be read, or is not an image.
    """
    text = os.fspath(value)
    if text.startswith(("http://", "https://", "data:")):
        return text
    path = Path(text).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = f"{field}: {text!r} is neither a URL nor an existing file. Pass an http(s) URL or a local image path."
        raise InvalidInputError(msg, field=field) from None
    except OSError as exc:
        msg = f"{field}: cannot read {text!r} ({exc.strerror or exc}). Check the path and its permissions."
        raise InvalidInputError(msg, field=field) from None
    content_type = sniff_image_type(data[:16])
    if content_type is None:
        msg = f"{field}: {text!r} is not a PNG, JPEG, WebP, GIF or BMP image."
        raise InvalidInputError(msg, field=field)
    if len(data) <= DATA_URI_MAX_BYTES:
        return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
    return upload(data, content_type, path.name)


def _extension(content_type: str | None, url: str) -> str:
    if content_type:
        base = content_type.split(";")[0].strip().lower()
        if base in _EXTENSIONS:
            return _EXTENSIONS[base]
        guessed = mimetypes.guess_extension(base)
        if guessed:
            return guessed
    suffix = Path(url.split("?", maxsplit=1)[0]).suffix
    return suffix if 1 < len(suffix) <= 6 else ".bin"


def download(
    url: str,
    directory: str | Path,
    *,
    session: requests.Session | None = None,
    filename: str | None = None,
    timeout: float = 60.0,
    policy: RetryPolicy | None = None,
    chunk_size: int = 256 * 1024,
) -> Path:
    """Download ``url`` into ``directory`` atomically and return the file's path.

    Args:
        url: The file to fetch.
        directory: Where to put it (created if missing).
        session: The ``requests.Session`` to use (one is made if ``None``).
        filename: The name without extension (default: the URL's file name);
            the extension comes from the content type.
        timeout: Deadline for the whole download, retries included, in seconds.
        policy: Retry policy for 5xx and connection errors.
        chunk_size: Bytes per read.

    Raises:
        FalApiError: a 4xx answer, or 5xx/connection failures after retries.
        FalTimeoutError: the deadline passed.
    """
    own_session = session is None
    http = session or requests.Session()
    policy = policy or RetryPolicy()
    deadline = time.monotonic() + timeout
    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"Downloading {url} did not finish within {timeout:g} s. Try again or raise the timeout."
                raise FalTimeoutError(msg, attempts=policy.attempts)
            try:
                return _download_once(http, url, target_dir, filename, remaining, chunk_size)
            except FalApiError as exc:
                delay = policy.delay_for(exc, deadline - time.monotonic())
                if delay is None:
                    exc.attempts = policy.attempts
                    raise
                policy = policy.increment(exc)
                _retry.sleep(delay)
    finally:
        if own_session:
            http.close()


def _download_once(
    http: requests.Session, url: str, directory: Path, filename: str | None, timeout: float, chunk_size: int
) -> Path:
    try:
        response = http.get(url, stream=True, timeout=(min(timeout, 10.0), timeout))
    except requests.Timeout as exc:
        msg = f"Downloading {url} timed out. Try again."
        raise FalConnectionError(msg, error_code="TIMEOUT", retryable=True) from exc
    except requests.RequestException as exc:
        msg = f"Could not download {url}: the connection failed ({type(exc).__name__}). Try again."
        raise FalConnectionError(msg, retryable=True) from exc
    with response:
        if response.status_code >= 400:
            raise error_from_response(response.status_code, dict(response.headers), response.content)
        name = filename or Path(url.split("?", maxsplit=1)[0]).stem or "output"
        final = directory / f"{name}{_extension(response.headers.get('content-type'), url)}"
        expected = response.headers.get("content-length")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=directory)
        tmp = Path(tmp_name)
        try:
            written = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_content(chunk_size):
                    out.write(chunk)
                    written += len(chunk)
            if expected is not None and expected.isdigit() and written != int(expected):
                msg = f"Download of {url} was cut short: got {written} of {expected} bytes. Trying again may help."
                raise FalConnectionError(msg, error_code="INCOMPLETE_DOWNLOAD", retryable=True)
            tmp.replace(final)
        except requests.RequestException as exc:
            msg = f"The download of {url} broke off ({type(exc).__name__}). Try again."
            raise FalConnectionError(msg, retryable=True) from exc
        finally:
            # Covers every way out, KeyboardInterrupt included: no partial file is left behind.
            tmp.unlink(missing_ok=True)
    return final


def save_outputs(
    client: FalClient | None,
    outputs: Sequence[tuple[str, str | None]],
    directory: Path,
    prefix: str,
) -> list[Path]:
    """Download each ``(url, content_type)`` of a result into ``directory``, named ``prefix[-n]``."""
    paths = []
    for index, (url, _content_type) in enumerate(outputs):
        name = prefix if len(outputs) == 1 else f"{prefix}-{index}"
        if client is not None:
            paths.append(client.download(url, directory, filename=name))
        else:
            paths.append(download(url, directory, filename=name))
    return paths
