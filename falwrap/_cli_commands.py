"""The ``falwrap`` subcommands; :mod:`falwrap.cli` parses, this module runs.

Each command takes the parsed arguments and the redacting console, writes
its results and returns an exit code; errors propagate to ``cli.main``, which
turns them into one friendly line and an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falwrap._cli_errors import EXIT_OK, UsageError
from falwrap._cli_output import Console, format_usd
from falwrap._progress import ProgressPrinter

if TYPE_CHECKING:
    from falwrap.client import FalClient
    from falwrap.config import FalConfig
    from falwrap.results import ImageResult, VideoResult

__all__ = ["run_command"]

#: Prompts of ``falwrap demo``: the video animates the image the first call made.
DEMO_IMAGE_PROMPT = "a lighthouse on a cliff at dusk, waves below, warm light in the window"
DEMO_VIDEO_PROMPT = "the waves roll in and the lighthouse beam sweeps across the sea"

#: Keyword arguments the image/video commands set from their own options; ``--param`` may not.
_RESERVED_PARAMS = frozenset(
    {
        "prompt", "model", "size", "num_images", "seed", "budget", "quality", "urgency",
        "on_progress", "timeout", "image", "duration", "aspect_ratio",
    }
)  # fmt: skip


def run_command(args: argparse.Namespace, console: Console) -> int:
    """Run the subcommand ``args.command``.

    Args:
        args: From :func:`falwrap.cli.build_parser`.
        console: Where to write.

    Returns:
        The exit code (0; failures raise).

    Raises:
        FalwrapError: a command failed; ``cli.exit_code_for`` maps it to an exit code.
        UsageError: an option cannot work (an unwritable ``--out``, a bad ``--param``).
    """
    context = _Context(args, console)
    commands: dict[str, Callable[[_Context], int]] = {
        "image": _image,
        "video": _video,
        "models": _models,
        "select": _select,
        "stats": _stats,
        "demo": _demo,
    }
    with context.logging():
        return commands[args.command](context)


class _Context:
    """What every command needs: its options, the console, the terminal, and how to get a client."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.offline = bool(getattr(args, "offline", False))
        self.debug = bool(getattr(args, "debug", False))
        self.as_json = bool(getattr(args, "json", False))
        self.tty = _isatty(console.stderr)
        self._printer: ProgressPrinter | None = None

    def note(self, text: str) -> None:
        """A message for a person watching: shown on a terminal, silent when stderr is redirected."""
        if self._printer is not None and self._printer.enabled:
            self._printer.note(text)
        elif self.tty:
            self.console.err(text)

    @contextmanager
    def progress(self, label: str) -> Iterator[ProgressPrinter]:
        """A live status line on stderr for the calls inside (on a terminal only)."""
        printer = ProgressPrinter(self.console.stderr, enabled=self.tty, redact=self.console.redact, label=label)
        self._printer = printer
        try:
            with printer:
                yield printer
        finally:
            self._printer = None

    @contextmanager
    def logging(self) -> Iterator[None]:
        """Route falwrap's log records: all of them with ``--debug``, warnings on a terminal, else none."""
        logger = logging.getLogger("falwrap")
        handler: logging.Handler
        if self.debug:
            handler = self.console.log_handler(logging.DEBUG)
            level = logging.DEBUG
        else:
            handler = _NoteHandler(self)
            level = logging.WARNING
        saved = (logger.level, logger.propagate)
        logger.setLevel(level)
        logger.addHandler(handler)
        # Without this, Python's last-resort handler would print retry warnings into piped stderr.
        logger.propagate = False
        httpx_logger = logging.getLogger("httpx")
        if self.debug:
            httpx_logger.addHandler(handler)
            httpx_logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            httpx_logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]

    @contextmanager
    def client(self) -> Iterator[FalClient]:
        """A client for this command: from the environment, or against an in-process FakeFal with ``--offline``.

        Raises:
            ConfigurationError: no key or an invalid setting; says how to try falwrap without a key.
        """
        import attrs

        from falwrap.client import FalClient
        from falwrap.config import FalConfig
        from falwrap.errors import ConfigurationError

        config = FalConfig.from_env()
        self.console.add_secret(config.api_key)
        if not self.offline:
            try:
                client = FalClient(config)
            except ConfigurationError as exc:
                if exc.variable != "FAL_KEY":
                    raise
                msg = f"{exc.message} To try falwrap without a key, run `falwrap demo` or add --offline."
                raise ConfigurationError(msg, variable=exc.variable) from exc
            with client:
                yield client
            return
        from falwrap.testing import FakeFal

        with FakeFal() as fal:
            self.console.add_secret(fal.key)
            # Offline means self-contained: no shared Redis ledger or limiter either.
            local = attrs.evolve(
                config,
                api_key=fal.key,
                base_url=fal.url,
                rate_limit=attrs.evolve(config.rate_limit, redis_url=None),
            )
            self.note(f"offline: using the built-in FakeFal emulator at {fal.url}; nothing is billed")
            with FalClient(local) as client:
                yield client


class _NoteHandler(logging.Handler):
    """Shows falwrap's warnings (retries) above the progress line on a terminal; drops them otherwise."""

    def __init__(self, context: _Context) -> None:
        super().__init__(logging.WARNING)
        self._context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._context.note(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:
            self.handleError(record)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# --- arguments -----------------------------------------------------------------------------------


def _out_dir(args: argparse.Namespace) -> Path | None:
    """Where to save, checked before anything is generated (and paid for); ``None`` with ``--no-save``."""
    if getattr(args, "no_save", False):
        return None
    path = Path(args.out).expanduser()
    if path.exists() and not path.is_dir():
        msg = f"--out: {args.out!r} exists and is not a directory. Choose a directory."
        raise UsageError(msg)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        msg = f"--out: cannot write to {str(existing)!r} (permission denied). Choose another directory."
        raise UsageError(msg)
    return path


def _extra_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            msg = f"--param: expected KEY=VALUE such as num_inference_steps=8, got {item!r}."
            raise UsageError(msg)
        if key in _RESERVED_PARAMS:
            msg = f"--param: set {key} with its own option (--{key.replace('_', '-')}), not --param."
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


def _seconds(duration_ms: int) -> float:
    return round(duration_ms / 1000, 2)


# --- image and video -----------------------------------------------------------------------------


def _image(context: _Context) -> int:
    args = context.args
    out = _out_dir(args)
    params = _extra_params(args.param)
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
    _report_image(context, result, files)
    return EXIT_OK


def _report_image(context: _Context, result: ImageResult, files: Sequence[Path]) -> None:
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
                "seconds": _seconds(result.duration_ms),
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
                f"{_seconds(result.duration_ms):.1f}" if first else "",
                format_usd(result.cost_usd) if first else "",
                size,
                where,
            )
        )
    context.console.table(("model", "request id", "seconds", "cost", "size", "file" if files else "url"), rows)


def _video(context: _Context) -> int:
    args = context.args
    out = _out_dir(args)
    params = _extra_params(args.param)
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
    _report_video(context, result, file)
    return EXIT_OK


def _report_video(context: _Context, result: VideoResult, file: Path | None) -> None:
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
                "seconds": _seconds(result.duration_ms),
                "cost_usd": result.cost_usd,
                "offline": context.offline,
                "video": video,
            }
        )
        return
    where = str(file) if file is not None else result.video.url
    context.console.table(
        ("model", "request id", "seconds", "cost", "file" if file is not None else "url"),
        [(result.model, result.request_id, f"{_seconds(result.duration_ms):.1f}", format_usd(result.cost_usd), where)],
    )


# --- catalog -------------------------------------------------------------------------------------


def _model_entry(model: Any) -> dict[str, Any]:
    from falwrap.catalog import cost_per_output

    return {
        "id": model.id,
        "kind": model.kind,
        "quality": model.quality,
        "unit": model.unit,
        "unit_price_usd": model.unit_price_usd,
        "cost_per_output_usd": cost_per_output(model),
        "avg_latency_s": model.avg_latency_s,
        "max_width": model.max_width,
        "max_height": model.max_height,
        "image_input": model.image_input,
        "requires_image": model.requires_image,
        "description": model.description,
    }


def _models(context: _Context) -> int:
    from falwrap.catalog import MODEL_CATALOG

    kind = context.args.kind
    entries = [_model_entry(m) for m in MODEL_CATALOG.values() if kind is None or m.kind == kind]
    entries.sort(key=lambda e: (e["kind"], e["cost_per_output_usd"], e["id"]))
    if context.as_json:
        context.console.json({"models": entries})
        return EXIT_OK
    rows = []
    for entry in entries:
        image = "required" if entry["requires_image"] else ("optional" if entry["image_input"] else "")
        rows.append(
            (
                entry["id"],
                entry["kind"],
                entry["quality"],
                f"{format_usd(entry['unit_price_usd'])}/{entry['unit']}",
                format_usd(entry["cost_per_output_usd"]),
                f"~{entry['avg_latency_s']:g} s",
                image,
            )
        )
    context.console.table(("model", "kind", "quality", "price", "one output", "latency", "input image"), rows)
    return EXIT_OK


def _select(context: _Context) -> int:
    from falwrap.catalog import TaskRequirements, select_model

    args = context.args
    requirements = TaskRequirements(
        kind=args.kind, budget=args.budget, quality=args.quality, urgency=args.urgency, with_image=args.with_image
    )
    entry = _model_entry(select_model(requirements))
    if context.as_json:
        context.console.json(
            {
                "model": entry,
                "requirements": {
                    "kind": requirements.kind,
                    "budget_usd": requirements.budget,
                    "quality": requirements.quality,
                    "urgency": requirements.urgency,
                    "with_image": requirements.with_image,
                },
            }
        )
        return EXIT_OK
    budget = "no cap" if requirements.budget is None else format_usd(requirements.budget)
    context.console.table(
        ("model", "quality", "one output", "latency", "budget"),
        [
            (
                entry["id"],
                entry["quality"],
                format_usd(entry["cost_per_output_usd"]),
                f"~{entry['avg_latency_s']:g} s",
                budget,
            )
        ],
    )
    return EXIT_OK


# --- stats ---------------------------------------------------------------------------------------

_IN_PROCESS = (
    "No shared ledger is configured, so there are no stats to show here: falwrap keeps call statistics "
    "in the memory of the process that made the calls (FalClient.stats()). Set FALWRAP_REDIS_URL to share "
    "one ledger between processes and read it with `falwrap stats`."
)


def _stats(context: _Context) -> int:
    from falwrap.config import FalConfig
    from falwrap.errors import ConfigurationError

    config = FalConfig.from_env()
    context.console.add_secret(config.api_key)
    url = config.rate_limit.redis_url
    if url is None or context.offline:
        if context.as_json:
            context.console.json({"ledger": "process", "message": _IN_PROCESS})
        else:
            context.console.out(_IN_PROCESS)
        return EXIT_OK
    if not config.api_key:
        msg = (
            "falwrap stats reads the ledger of one fal key, and none is set. "
            "Set FAL_KEY (environment or .env) to the key whose calls you want to see."
        )
        raise ConfigurationError(msg, variable="FAL_KEY")
    stats, today = _redis_stats(config)
    if context.as_json:
        context.console.json(
            {"ledger": "redis", "key_fingerprint": config.key_fingerprint, "today_cost_usd": today, **stats}
        )
        return EXIT_OK
    _print_stats(context.console, config, stats, today)
    return EXIT_OK


def _redis_stats(config: FalConfig) -> tuple[dict[str, Any], Decimal]:
    from falwrap.errors import BackendUnavailableError, ConfigurationError

    url = config.rate_limit.redis_url
    assert url is not None
    try:
        from falwrap.backends.redis import RedisLedger, connect
    except ImportError:
        msg = "FALWRAP_REDIS_URL is set but redis-py is not installed. Run: pip install 'falwrap[redis]'."
        raise ConfigurationError(msg, variable="FALWRAP_REDIS_URL") from None
    client = connect(url)
    try:
        # The namespace the client's store writes under (see falwrap.backends.shared).
        ledger = RedisLedger(client, config.key_fingerprint)
        return ledger.stats(), ledger.daily_cost()
    except BackendUnavailableError as exc:
        # The URL may hold a password: name the variable, never the value.
        msg = (
            f"Could not read the ledger from the Redis at FALWRAP_REDIS_URL ({type(exc.__cause__ or exc).__name__}). "
            "Check that Redis is running and the URL is right."
        )
        raise ConfigurationError(msg, variable="FALWRAP_REDIS_URL") from None
    finally:
        client.close()


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def _print_stats(console: Console, config: FalConfig, stats: dict[str, Any], today: Decimal) -> None:
    rate = stats.get("success_rate")
    success = "-" if rate is None else f"{float(rate) * 100:.1f}%"
    console.table(
        ("", ""),
        [
            ("ledger", f"redis (key fingerprint {config.key_fingerprint})"),
            ("spent today (UTC)", format_usd(today)),
            ("calls", f"{stats['total_calls']} ({stats['successes']} ok, {stats['failures']} failed)"),
            ("success rate", success),
            ("total cost", format_usd(stats["total_cost_usd"])),
            (
                "duration",
                f"avg {_ms(stats['avg_duration_ms'])}, p50 {_ms(stats['p50_duration_ms'])}, "
                f"p95 {_ms(stats['p95_duration_ms'])}",
            ),
        ],
    )
    by_model = stats.get("by_model") or {}
    if by_model:
        console.out()
        console.table(
            ("model", "calls", "ok", "cost", "p50", "p95"),
            [
                (
                    model,
                    row["total_calls"],
                    row["successes"],
                    format_usd(row["total_cost_usd"]),
                    _ms(row["p50_duration_ms"]),
                    _ms(row["p95_duration_ms"]),
                )
                for model, row in sorted(by_model.items())
            ],
        )


# --- demo ----------------------------------------------------------------------------------------


def _demo(context: _Context) -> int:
    from falwrap.client import FalClient
    from falwrap.config import FalConfig, RateLimitConfig
    from falwrap.testing import FakeFal

    out = _out_dir(context.args)
    assert out is not None
    started = time.monotonic()
    # Built from scratch, not from the environment: the demo must work whatever FAL_* or .env say.
    with FakeFal() as fal, context.progress("demo") as progress:
        context.console.add_secret(fal.key)
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=600, burst=2)
        )
        with FalClient(config) as client:
            progress.begin("image")
            # PNG rather than flux's default JPEG: a lossless file is what the video model animates.
            image = client.image(DEMO_IMAGE_PROMPT, output_format="png", on_progress=progress.update)
            progress.set_state("saving the image")
            (image_file,) = image.save(out, prefix="demo-image")
            progress.begin("video")
            # The local file goes up like any user's would: inline or through fal's storage.
            video = client.video(DEMO_VIDEO_PROMPT, image=image_file, on_progress=progress.update)
            progress.set_state("saving the video")
            video_file = video.save(out, prefix="demo-video")
    elapsed = time.monotonic() - started
    outputs = [
        ("image", image.model, image.request_id, image.duration_ms, image.cost_usd, image_file),
        ("video", video.model, video.request_id, video.duration_ms, video.cost_usd, video_file),
    ]
    total = image.cost_usd + video.cost_usd
    if context.as_json:
        context.console.json(
            {
                "offline": True,
                "out": str(out.resolve()),
                "seconds": round(elapsed, 2),
                "total_cost_usd": total,
                "outputs": [
                    {
                        "kind": kind,
                        "model": model,
                        "request_id": rid,
                        "seconds": _seconds(ms),
                        "cost_usd": cost,
                        "file": str(path.resolve()),
                    }
                    for kind, model, rid, ms, cost, path in outputs
                ],
            }
        )
        return EXIT_OK
    console = context.console
    console.table(
        ("model", "request id", "seconds", "cost", "file"),
        [
            (model, rid, f"{_seconds(ms):.1f}", format_usd(cost), str(path))
            for _k, model, rid, ms, cost, path in outputs
        ],
    )
    console.out()
    console.out(
        f"Made offline by the built-in FakeFal emulator in {elapsed:.1f} s: no key, no network, "
        f"nothing billed (real price {format_usd(total)})."
    )
    console.out('Next: set FAL_KEY (environment or .env) and run: falwrap image "your prompt"')
    return EXIT_OK
