"""``falwrap image`` and ``falwrap video``: generate, save, report.

Every option is checked before the client is built, so a bad one costs
nothing: an unwritable ``--out`` or a malformed ``--param`` fails before the
job is submitted and paid for.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK, UsageError
from falwrap.cli.output import format_usd
from falwrap.cli.saved import note_saved

if TYPE_CHECKING:
    from falwrap.results import ImageResult, VideoResult

__all__ = [
    "IMAGE_OPTIONS",
    "VIDEO_OPTIONS",
    "SaveError",
    "image_command",
    "out_dir",
    "rounded_seconds",
    "video_command",
]

#: Keyword arguments of ``FalClient.image`` the command sets itself: the option that sets each
#: (``None``: falwrap sets it). ``--param`` may not set them; ``prompt`` is the first argument.
IMAGE_OPTIONS: Mapping[str, str | None] = {
    "model": "--model", "size": "--size", "num_images": "--num-images", "seed": "--seed",
    "budget": "--budget", "quality": "--quality", "urgency": "--urgency", "timeout": "--timeout",
    "on_progress": None,
}  # fmt: skip
#: The same for ``FalClient.video``.
VIDEO_OPTIONS: Mapping[str, str | None] = {
    "image": "--image", "duration": "--duration", "aspect_ratio": "--aspect-ratio", "model": "--model",
    "budget": "--budget", "quality": "--quality", "urgency": "--urgency", "timeout": "--timeout",
    "on_progress": None,
}  # fmt: skip


def out_dir(args: argparse.Namespace) -> Path | None:
    """Where to save, checked before anything is generated (and paid for); ``None`` with ``--no-save``."""
    if getattr(args, "no_save", False):
        return None
    unusable = f"--out: {args.out!r} is not a usable directory path. Choose another directory."
    if "\0" in args.out:
        # pathlib's exists() answers False for it, and mkdir() would fail only after the job was paid for.
        raise UsageError(unusable)
    try:
        path = Path(args.out).expanduser()
        if path.exists() and not path.is_dir():
            msg = f"--out: {args.out!r} exists and is not a directory. Choose a directory."
            raise UsageError(msg)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except (ValueError, OSError, RuntimeError):
        # An unknown ~user, a name too long: not a directory anyone can write to.
        raise UsageError(unusable) from None
    if not os.access(existing, os.W_OK | os.X_OK):
        msg = f"--out: cannot write to {str(existing)!r} (permission denied). Choose another directory."
        raise UsageError(msg)
    return path


def _extra_params(pairs: Sequence[str], options: Mapping[str, str | None]) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs as model parameters; ``options`` maps the names the command sets itself."""
    params: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            msg = f"--param: expected KEY=VALUE such as num_inference_steps=8, got {item!r}."
            raise UsageError(msg)
        if key == "prompt":
            msg = '--param: the prompt is the command\'s first argument (falwrap image "a red fox"), not a --param.'
            raise UsageError(msg)
        if key in options:
            option = options[key]
            how = f"with its own option ({option})" if option else "by falwrap itself"
            msg = f"--param: {key} is set {how}, not with --param."
            raise UsageError(msg)
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@contextmanager
def _keeping_urls(urls: Sequence[str], request_id: str) -> Iterator[None]:
    """On a failed save, add the output URLs to the error: the generation is paid for, keep it reachable."""
    from falwrap.errors import FalwrapError

    try:
        yield
    except FalwrapError as exc:
        exc.message = f"{exc.message} The output of request {request_id} was generated; fetch it from: {' '.join(urls)}"
        raise
    except OSError as exc:
        msg = (
            f"Could not save the output ({exc.strerror or type(exc).__name__}). The output of request "
            f"{request_id} was generated; fetch it from: {' '.join(urls)}"
        )
        raise SaveError(msg) from exc


class SaveError(OSError):
    """The output was generated but could not be written to disk; the message carries its URLs."""

    def __str__(self) -> str:
        return str(self.args[0])


def rounded_seconds(duration_ms: int) -> float:
    """Milliseconds as seconds with two decimals, for reports."""
    return round(duration_ms / 1000, 2)


def image_command(context: Context) -> int:
    """``falwrap image``: generate, save (unless --no-save) and report the images."""
    args = context.args
    out = out_dir(args)
    params = _extra_params(args.param, IMAGE_OPTIONS)
    with context.client() as client, context.progress("image") as progress:
        result = client.image(
            args.prompt,
            model=args.model,
            size=args.size,
            num_images=args.num_images,
            seed=args.seed,
            budget=args.budget,
            quality=args.quality,
            urgency=args.urgency,
            on_progress=progress.update,
            timeout=args.timeout,
            **params,
        )
        files: list[Path] = []
        if out is not None:
            progress.set_state(f"saving {len(result.images)} file(s)")
            with _keeping_urls([image.url for image in result.images], result.request_id):
                files = result.save(out)
            note_saved(result.request_id, files, offline=context.offline)
    _report_image(context, result, files)
    return EXIT_OK


def _report_image(context: Context, result: ImageResult, files: Sequence[Path]) -> None:
    if context.as_json:
        images = []
        for index, image in enumerate(result.images):
            entry: dict[str, Any] = {
                "url": image.url,
                "width": image.width,
                "height": image.height,
                "content_type": image.content_type,
            }
            if files:
                entry["file"] = str(files[index].resolve())
            images.append(entry)
        context.console.json(
            {
                "model": result.model,
                "request_id": result.request_id,
                "seconds": rounded_seconds(result.duration_ms),
                "cost_usd": result.cost_usd,
                "seed": result.seed,
                "offline": context.offline,
                "images": images,
            }
        )
        return
    rows = []
    for index, image in enumerate(result.images):
        where = str(files[index]) if files else image.url
        size = f"{image.width}x{image.height}" if image.width and image.height else ""
        first = index == 0
        rows.append(
            (
                result.model if first else "",
                result.request_id if first else "",
                f"{rounded_seconds(result.duration_ms):.1f}" if first else "",
                format_usd(result.cost_usd) if first else "",
                size,
                where,
            )
        )
    context.console.table(("model", "request id", "seconds", "cost", "size", "file" if files else "url"), rows)


def video_command(context: Context) -> int:
    """``falwrap video``: generate, save (unless --no-save) and report the video."""
    args = context.args
    out = out_dir(args)
    params = _extra_params(args.param, VIDEO_OPTIONS)
    with context.client() as client, context.progress("video") as progress:
        result = client.video(
            args.prompt,
            image=args.image,
            duration=args.duration,
            aspect_ratio=args.aspect_ratio,
            model=args.model,
            budget=args.budget,
            quality=args.quality,
            urgency=args.urgency,
            on_progress=progress.update,
            timeout=args.timeout,
            **params,
        )
        file: Path | None = None
        if out is not None:
            progress.set_state("saving the video")
            with _keeping_urls([result.video.url], result.request_id):
                file = result.save(out)
            note_saved(result.request_id, [file], offline=context.offline)
    _report_video(context, result, file)
    return EXIT_OK


def _report_video(context: Context, result: VideoResult, file: Path | None) -> None:
    if context.as_json:
        video: dict[str, Any] = {
            "url": result.video.url,
            "content_type": result.video.content_type,
            "file_size": result.video.file_size,
        }
        if file is not None:
            video["file"] = str(file.resolve())
        context.console.json(
            {
                "model": result.model,
                "request_id": result.request_id,
                "seconds": rounded_seconds(result.duration_ms),
                "cost_usd": result.cost_usd,
                "offline": context.offline,
                "video": video,
            }
        )
        return
    where = str(file) if file is not None else result.video.url
    context.console.table(
        ("model", "request id", "seconds", "cost", "file" if file is not None else "url"),
        [
            (
                result.model,
                result.request_id,
                f"{rounded_seconds(result.duration_ms):.1f}",
                format_usd(result.cost_usd),
                where,
            )
        ],
    )
