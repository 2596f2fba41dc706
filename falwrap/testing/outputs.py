"""Model outputs shaped like fal's flux and kling endpoints, and the files they point to."""

from __future__ import annotations

import base64
import functools
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from falwrap.catalog import IMAGE_SIZE_PRESETS
from falwrap.testing.billing import DEFAULT_VIDEO_SECONDS
from falwrap.testing.media import MAX_SIDE, image_size_of, jpeg_bytes, png_bytes
from falwrap.testing.models import FakeModel
from falwrap.testing.video import mp4_of_length

__all__ = ["IMAGE_SIZE_PRESETS", "FileStore", "OutputOptions", "build_output", "resolve_image_size", "video_seconds"]

DEFAULT_IMAGE_SIZE = "landscape_4_3"

#: flux-pro v1.1 ultra takes ``aspect_ratio`` instead and renders about 4 megapixels.
ULTRA_ASPECT_RATIOS: Mapping[str, tuple[int, int]] = {
    "21:9": (3136, 1344),
    "16:9": (2752, 1536),
    "4:3": (2368, 1792),
    "3:2": (2496, 1664),
    "1:1": (2048, 2048),
    "2:3": (1664, 2496),
    "3:4": (1792, 2368),
    "9:16": (1536, 2752),
    "9:21": (1344, 3136),
}

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}

FileSource = Callable[[], bytes]


@attrs.frozen
class StoredFile:
    """One file the emulator serves under ``/files/<name>``.

    Args:
        content_type: the ``Content-Type`` to answer with.
        source: returns the bytes (generated lazily and cached by size).
        expires_at: monotonic time from which the file is gone (object lifecycle); None: never.
    """

    content_type: str
    source: FileSource
    expires_at: float | None = None


@attrs.define
class FileStore:
    """Files served under ``/files/<name>``: generated outputs and uploads. Thread-safe.

    Args:
        clock: monotonic clock deciding when files expire.
    """

    clock: Callable[[], float] = time.monotonic
    _files: dict[str, StoredFile] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def put(self, name: str, content_type: str, source: FileSource | bytes, expires_at: float | None = None) -> None:
        """Store (or replace) a file.

        Args:
            name: the path segment after ``/files/``.
            content_type: its media type.
            source: the bytes, or a callable producing them on first download.
            expires_at: monotonic time from which it answers 404; None keeps it.
        """
        if isinstance(source, bytes):
            data = source

            def source() -> bytes:
                return data

        with self._lock:
            self._files[name] = StoredFile(content_type, source, expires_at)

    def get(self, name: str) -> tuple[str, bytes] | None:
        """Look a file up.

        Args:
            name: the path segment after ``/files/``.

        Returns:
            ``(content_type, data)``, or None when there is no such file or it expired.
        """
        with self._lock:
            stored = self._files.get(name)
            if stored is not None and stored.expires_at is not None and self.clock() >= stored.expires_at:
                del self._files[name]
                stored = None
        return None if stored is None else (stored.content_type, stored.source())

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)


def resolve_image_size(value: Any) -> tuple[int, int]:
    """Width and height for flux's ``image_size`` argument.

    Args:
        value: a preset name, a ``{"width", "height"}`` mapping, or None for the default.

    Returns:
        ``(width, height)``, clamped to 1..14142.

    Raises:
        ValueError: for an unknown preset or a malformed mapping.
    """
    if value is None:
        value = DEFAULT_IMAGE_SIZE
    if isinstance(value, str):
        if value not in IMAGE_SIZE_PRESETS:
            msg = f"unknown image_size preset {value!r}"
            raise ValueError(msg)
        return IMAGE_SIZE_PRESETS[value]
    if isinstance(value, Mapping):
        try:
            width, height = int(value["width"]), int(value["height"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"image_size must have integer width and height, got {value!r}"
            raise ValueError(msg) from exc
        return (min(MAX_SIDE, max(1, width)), min(MAX_SIDE, max(1, height)))
    msg = f"image_size must be a preset name or {{width, height}}, got {value!r}"
    raise ValueError(msg)


@attrs.frozen
class OutputOptions:
    """How outputs are produced, from the emulator's behaviour and the request's headers.

    Args:
        base_url: the emulator's URL, for file URLs.
        video_overrun_s: seconds a video runs past the requested duration.
        data_uris: answer ``sync_mode: true`` image requests with ``data:`` URIs.
        expires_at: monotonic time from which generated files are gone; None: never.
    """

    base_url: str
    video_overrun_s: Decimal = Decimal(0)
    data_uris: bool = False
    expires_at: float | None = None


def video_seconds(arguments: Mapping[str, Any], overrun_s: Decimal = Decimal(0)) -> Decimal:
    """How long a video job's clip lasts: the requested ``duration`` plus the overrun.

    Args:
        arguments: the job's input (``duration`` in seconds, a number or a numeric string).
        overrun_s: seconds the model produces past the request.

    Returns:
        Seconds, exact.

    Raises:
        ValueError: for a duration that is not a positive number.
    """
    raw = arguments.get("duration", DEFAULT_VIDEO_SECONDS)
    try:
        requested = Decimal(str(raw))
    except (InvalidOperation, ValueError) as exc:
        msg = f"duration must be a number of seconds, got {raw!r}"
        raise ValueError(msg) from exc
    if not requested.is_finite() or requested <= 0 or isinstance(raw, bool):
        msg = f"duration must be a positive number of seconds, got {raw!r}"
        raise ValueError(msg)
    return requested + overrun_s


def _data_uri(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _image_output(
    model: FakeModel,
    arguments: Mapping[str, Any],
    request_id: str,
    options: OutputOptions,
    files: FileStore,
    inference_s: float,
) -> dict[str, Any]:
    if model.id.endswith("ultra") and "image_size" not in arguments:
        width, height = ULTRA_ASPECT_RATIOS.get(str(arguments.get("aspect_ratio", "16:9")), ULTRA_ASPECT_RATIOS["16:9"])
    else:
        width, height = resolve_image_size(arguments.get("image_size"))
    fmt = "png" if arguments.get("output_format") == "png" else "jpeg"
    count = max(1, int(arguments.get("num_images", 1)))
    render = png_bytes if fmt == "png" else jpeg_bytes
    content_type = _CONTENT_TYPES[fmt]
    # sync_mode asks for the image in the answer instead of on the CDN.
    inline = options.data_uris and arguments.get("sync_mode") is True
    images = []
    for index in range(count):
        if inline:
            url = _data_uri(content_type, render(width, height))
        else:
            name = f"{request_id}-{index}.{'png' if fmt == 'png' else 'jpg'}"
            files.put(name, content_type, functools.partial(render, width, height), options.expires_at)
            url = f"{options.base_url}/files/{name}"
        images.append({"url": url, "width": width, "height": height, "content_type": content_type})
    seed = arguments.get("seed")
    return {
        "images": images,
        "timings": {"inference": round(inference_s, 4)},
        "seed": int(seed) if seed is not None else random.randrange(2**32),
        "has_nsfw_concepts": [False] * count,
        "prompt": str(arguments.get("prompt", "")),
    }


#: The size an upscaler assumes for an input it cannot read (a URL elsewhere on the web).
UNREADABLE_INPUT_SIZE = (512, 512)


def _input_size(url: Any, base_url: str, files: FileStore) -> tuple[int, int]:
    """The size of an input image: a data URI or a file this emulator serves; never fetched elsewhere."""
    data: bytes | None = None
    if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
        try:
            data = base64.b64decode(url.partition(";base64,")[2], validate=True)
        except ValueError:
            data = None
    elif isinstance(url, str) and url.startswith(f"{base_url}/files/"):
        found = files.get(url.removeprefix(f"{base_url}/files/"))
        data = found[1] if found else None
    return (image_size_of(data) if data else None) or UNREADABLE_INPUT_SIZE


def _upscale_output(
    arguments: Mapping[str, Any], request_id: str, options: OutputOptions, files: FileStore, inference_s: float
) -> dict[str, Any]:
    width, height = _input_size(arguments.get("image_url"), options.base_url, files)
    factor = arguments.get("upscale_factor", arguments.get("scale", 2))
    factor = float(factor) if isinstance(factor, (int, float)) and not isinstance(factor, bool) else 2.0
    size = (min(MAX_SIDE, max(1, round(width * factor))), min(MAX_SIDE, max(1, round(height * factor))))
    name = f"{request_id}-0.png"
    files.put(name, "image/png", functools.partial(png_bytes, *size), options.expires_at)
    seed = arguments.get("seed")
    url = f"{options.base_url}/files/{name}"
    return {
        "image": {"url": url, "width": size[0], "height": size[1], "content_type": "image/png"},
        "seed": int(seed) if isinstance(seed, int) else random.randrange(2**32),
        "timings": {"inference": round(inference_s, 4)},
    }


def _video_output(
    arguments: Mapping[str, Any], request_id: str, options: OutputOptions, files: FileStore
) -> dict[str, Any]:
    name = f"{request_id}.mp4"
    data = mp4_of_length(video_seconds(arguments, options.video_overrun_s))
    files.put(name, "video/mp4", data, options.expires_at)
    return {
        "video": {
            "url": f"{options.base_url}/files/{name}",
            "content_type": "video/mp4",
            "file_name": "output.mp4",
            "file_size": len(data),
        }
    }


def build_output(
    model: FakeModel,
    arguments: Mapping[str, Any],
    request_id: str,
    options: OutputOptions,
    files: FileStore,
    inference_s: float,
) -> dict[str, Any]:
    """The output JSON of a successful job, registering its files in ``files``.

    Args:
        model: the model that ran.
        arguments: the job's input.
        request_id: the job's id (names the files).
        options: URLs, video length and file expiry.
        files: where output files are registered.
        inference_s: simulated run time, reported in ``timings``.

    Returns:
        A flux-shaped output for image models, a kling-shaped one for video
        models, ``{"image", "seed", "timings"}`` for upscalers.

    Raises:
        ValueError: when image or video arguments cannot be interpreted.
    """
    if model.kind == "video":
        return _video_output(arguments, request_id, options, files)
    if model.kind == "upscale":
        return _upscale_output(arguments, request_id, options, files, inference_s)
    return _image_output(model, arguments, request_id, options, files, inference_s)


def new_file_name(file_name: str | None) -> str:
    """A unique name under ``/files/`` that keeps the uploaded file's base name.

    Args:
        file_name: the name the client gave, if any.

    Returns:
        ``<hex>/<name>``-style unique name without slashes.
    """
    base = (file_name or "upload.bin").replace("/", "_").replace("\\", "_") or "upload.bin"
    return f"{uuid.uuid4().hex}-{base}"
