"""The ``falwrap`` command: generate images and videos, browse models, read stats, run a demo.

Exit codes::

    0  success
    1  an unexpected error (a bug: run again with --debug and report it)
    2  usage: bad arguments or options, or no model fits the requirements
    3  configuration: missing key, invalid setting, unreachable Redis ledger
    4  fal API error: fal refused or failed the request, or could not be reached
    5  timeout: the deadline passed (the job was cancelled at fal)
    6  budget: the daily budget would be exceeded (nothing was sent)
    130 interrupted (Ctrl-C; the job was cancelled at fal)

Errors print one friendly line on stderr (``--debug`` adds the traceback);
with ``--json`` stdout carries exactly one JSON document, an ``{"error": ...}``
one on failure. Nothing written ever contains the API key.

Everything heavy (the client, fal_client, httpx, the emulator) is imported
inside the command that needs it, so ``falwrap --help`` and ``falwrap models``
start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import NoReturn

from falwrap._cli_errors import (
    EXIT_API,
    EXIT_BUDGET,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    UsageError,
    exit_code_for,
)
from falwrap._cli_output import Console
from falwrap._version import __version__

__all__ = [
    "EXIT_API",
    "EXIT_BUDGET",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "exit_code_for",
    "main",
]

_QUALITIES = ("draft", "production", "premium")
_URGENCIES = ("low", "normal", "high")
_KINDS = ("image", "video")


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors printed as one line through the redacting console."""

    console: Console | None = None

    def error(self, message: str) -> NoReturn:
        msg = f"{message} (see: {self.prog} --help)"
        raise _ArgumentError(msg)


class _ArgumentError(Exception):
    pass


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        msg = f"expected an amount in USD such as 0.05, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        msg = f"expected a positive number of seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _selection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model selection (when --model is not given)")
    group.add_argument("--budget", type=_money, metavar="USD", help="most one output may cost, e.g. 0.01")
    group.add_argument("--quality", choices=_QUALITIES, help="draft (any), production (medium+), premium (high+)")
    group.add_argument("--urgency", choices=_URGENCIES, help="high picks the fastest model")


def _output_options(parser: argparse.ArgumentParser, *, default_out: str | None = ".") -> None:
    parser.add_argument(
        "--out", metavar="DIR", default=default_out, help=f"directory to save files in (default: {default_out})"
    )


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are suppressed, so `falwrap --debug image x` is not undone
    # by the subparser's own default; both `falwrap --offline image` and `falwrap image --offline` work.
    default: object = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--offline",
        action="store_true",
        default=default,
        help="run against an in-process FakeFal emulator: no key, no network, nothing billed",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs (never the key)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default, help="print one JSON document on stdout (errors too)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``falwrap`` argument parser.

    Returns:
        The parser; ``parse_args`` gives a namespace with ``command`` set.
    """
    parser = _Parser(
        prog="falwrap",
        description="Generate images and videos with fal.ai: typed errors, safe retries, budgets, model selection.",
        epilog="Start with `falwrap demo` (no key needed). Set FAL_KEY (environment or .env) for real calls.",
    )
    parser.add_argument("--version", action="version", version=f"falwrap {__version__}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    image = commands.add_parser("image", help="generate images from a prompt", description="Generate images.")
    image.add_argument("prompt", help="what to draw")
    image.add_argument("--model", metavar="ID", help="endpoint id, e.g. fal-ai/flux/schnell (see `falwrap models`)")
    image.add_argument("--size", metavar="WxH|NAME", help="e.g. 1024x768, square_hd, landscape_16_9")
    image.add_argument("--num-images", type=int, default=1, metavar="N", help="1 to 4 (default 1)")
    image.add_argument("--seed", type=int, metavar="S", help="reproduce an earlier image")
    _selection_options(image)
    _common_call_options(image)
    _global_options(image, top=False)

    video = commands.add_parser("video", help="generate a video from a prompt", description="Generate a video.")
    video.add_argument("prompt", help="what happens in the video")
    video.add_argument("--image", metavar="PATH|URL", help="an image to animate (a local file is uploaded)")
    video.add_argument("--duration", type=int, choices=(5, 10), default=5, help="seconds (default 5)")
    video.add_argument("--aspect-ratio", choices=("16:9", "9:16", "1:1"), default="16:9", help="default 16:9")
    video.add_argument("--model", metavar="ID", help="endpoint id (see `falwrap models --kind video`)")
    _selection_options(video)
    _common_call_options(video)
    _global_options(video, top=False)

    models = commands.add_parser("models", help="list the model catalog", description="List known models.")
    models.add_argument("--kind", choices=_KINDS, help="only image or only video models")
    _global_options(models, top=False)

    select = commands.add_parser(
        "select", help="show which model fits a budget, quality and urgency", description="Choose a model."
    )
    select.add_argument("--kind", choices=_KINDS, default="image", help="default image")
    select.add_argument("--budget", type=_money, metavar="USD", help="most one output may cost, e.g. 0.01")
    # draft by default, as in the client: a budget alone then picks the best model it affords.
    select.add_argument("--quality", choices=_QUALITIES, default="draft", help="default draft")
    select.add_argument("--urgency", choices=_URGENCIES, default="normal", help="default normal")
    select.add_argument("--with-image", action="store_true", help="the task has an input image")
    _global_options(select, top=False)

    stats = commands.add_parser(
        "stats", help="call statistics from the shared Redis ledger", description="Show ledger statistics."
    )
    _global_options(stats, top=False)

    demo = commands.add_parser(
        "demo",
        help="generate an image and a video offline with the built-in emulator",
        description="Run falwrap end to end against an in-process FakeFal: no key, no network, nothing billed.",
    )
    _output_options(demo, default_out="falwrap-demo")
    _global_options(demo, top=False)
    return parser


def _common_call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS", help="deadline for the whole call")
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another model parameter (VALUE is read as JSON when it parses, e.g. -p num_inference_steps=8)",
    )
    _output_options(parser)
    parser.add_argument("--no-save", action="store_true", help="print the URLs instead of downloading the files")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``falwrap`` command.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (see the module docstring).
    """
    console = Console(sys.stdout, sys.stderr)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        console.error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    debug = bool(getattr(args, "debug", False))
    as_json = bool(getattr(args, "json", False))
    from falwrap._cli_commands import run_command

    try:
        return run_command(args, console)
    except KeyboardInterrupt as exc:
        console.fail(exc, "Interrupted. A job in progress was cancelled at fal.", EXIT_INTERRUPTED, debug, as_json)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`falwrap models | head`): not an error worth a message.
        console.silence()
        return EXIT_OK
    except Exception as exc:
        code = exit_code_for(exc)
        message = str(exc) if code != EXIT_ERROR else _unexpected(exc)
        console.fail(exc, message, code, debug, as_json)
        return code


def _unexpected(exc: BaseException) -> str:
    from falwrap._cli_commands import SaveError

    if isinstance(exc, SaveError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}. Check the path and the free space."
    return f"unexpected {type(exc).__name__}: {exc}. Run again with --debug and report it."


if __name__ == "__main__":
    sys.exit(main())
