"""The ``falwrap`` command line: subcommands, options and how their values are read.

Values are checked here with the library's own validators (a deadline, an
amount of money), so a bad option is a usage error (exit 2) naming the
option, before any client exists.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import NoReturn

from falwrap._version import __version__
from falwrap.cli.exits import UsageError
from falwrap.errors import InvalidInputError
from falwrap.money import parse_usd
from falwrap.validation import check_timeout

__all__ = ["build_parser", "parse", "wants_json"]

_QUALITIES = ("draft", "production", "premium")
_URGENCIES = ("low", "normal", "high")
_KINDS = ("image", "video", "upscale")
#: Most jobs `falwrap history` lists at once.
MAX_LIMIT = 1_000_000
#: The most calls FalClient.map runs at once.
MAX_CONCURRENCY = 1024


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (as :class:`UsageError`) instead of printed."""

    def error(self, message: str) -> NoReturn:
        msg = f"{message} (see: {self.prog} --help)"
        raise UsageError(msg)


def _money(text: str) -> Decimal:
    try:
        return parse_usd(text)
    except ValueError as exc:
        msg = f"{exc}, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"expected a number of seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    try:
        seconds = check_timeout(value, "--timeout")
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("--timeout: ")) from None
    assert seconds is not None
    return seconds


def _bounded_int(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a whole number from {low} to {high}, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not low <= value <= high:
        msg = f"expected a whole number from {low} to {high}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _limit(text: str) -> int:
    return _bounded_int(text, 1, MAX_LIMIT)


def _concurrency(text: str) -> int:
    return _bounded_int(text, 1, MAX_CONCURRENCY)


def _since(text: str) -> datetime:
    from falwrap.cli.when import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="deadline for the whole call")
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


def build_parser() -> argparse.ArgumentParser:
    """The ``falwrap`` argument parser.

    Returns:
        The parser; ``parse_args`` gives a namespace with ``command`` set, and
        raises :class:`~falwrap.cli.exits.UsageError` on a bad command line.
    """
    parser = _Parser(
        prog="falwrap",
        description="Generate images and videos with fal.ai: typed errors, safe retries, budgets, model selection.",
        epilog="Start with `falwrap demo` (no key needed). Set FAL_KEY (environment or .env) for real calls. "
        "The command keeps a journal of its jobs (spend, budgets, results) in $XDG_DATA_HOME/falwrap/journal.db "
        "(the user data directory, ~/.local/share/falwrap on Linux, when XDG_DATA_HOME is unset), so "
        "FAL_DAILY_BUDGET_USD and `falwrap stats` cover every run; FALWRAP_STORE_URL names another store, "
        "FALWRAP_STORE_URL=memory: switches the journal off.",
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
    _call_options(image)
    _global_options(image, top=False)

    video = commands.add_parser("video", help="generate a video from a prompt", description="Generate a video.")
    video.add_argument("prompt", help="what happens in the video")
    video.add_argument("--image", metavar="PATH|URL", help="an image to animate (a local file is uploaded)")
    video.add_argument("--duration", type=int, choices=(5, 10), default=5, help="seconds (default 5)")
    video.add_argument("--aspect-ratio", choices=("16:9", "9:16", "1:1"), default="16:9", help="default 16:9")
    video.add_argument("--model", metavar="ID", help="endpoint id (see `falwrap models --kind video`)")
    _selection_options(video)
    _call_options(video)
    _global_options(video, top=False)

    models = commands.add_parser("models", help="list the model catalog", description="List known models.")
    models.add_argument("--kind", choices=_KINDS, help="only image, video or upscale models")
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
        "stats",
        help="today's spend and call statistics from the journal",
        description="Show today's spend (against FAL_DAILY_BUDGET_USD) and call statistics from the journal.",
    )
    _global_options(stats, top=False)

    _journal_commands(commands)

    config = commands.add_parser(
        "config",
        help="show the settings falwrap reads from the environment and .env",
        description="Show every setting as its environment variable (the key only as a fingerprint).",
    )
    _global_options(config, top=False)

    demo = commands.add_parser(
        "demo",
        help="generate an image and a video offline with the built-in emulator",
        description="Run falwrap end to end against an in-process FakeFal: no key, no network, nothing billed.",
    )
    _output_options(demo, default_out="falwrap-demo")
    _global_options(demo, top=False)

    _batch_command(commands)
    return parser


def _journal_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="settle journaled jobs nobody collected, by asking fal",
        description="Ask fal what became of every open job in the journal (a killed run, a deadline, Ctrl-C); "
        "store results and true costs, and report what changed.",
    )
    reconcile.add_argument(
        "--timeout", type=_seconds, default=60.0, metavar="SECONDS", help="longest to spend asking (default 60)"
    )
    _global_options(reconcile, top=False)

    history = commands.add_parser(
        "history",
        help="the journal's recent jobs, newest first",
        description="List the journal's jobs, newest first: time (UTC), endpoint, state, cost, request id, files.",
    )
    history.add_argument(
        "--since", type=_since, metavar="WHEN", help="only jobs opened since: an ISO date or time (UTC), or 2h, 3d..."
    )
    history.add_argument("--limit", type=_limit, default=50, metavar="N", help="at most N jobs (default 50)")
    _global_options(history, top=False)

    result = commands.add_parser(
        "result",
        help="save a finished job's outputs (from the journal, else from fal)",
        description="Save the outputs of a job: from the journal when it holds them (no request to fal), "
        "else from fal, waiting for a job still running.",
    )
    result.add_argument("request_id", metavar="REQUEST_ID", help="fal's request id (see `falwrap history`)")
    result.add_argument(
        "--model", metavar="ID", help="the job's endpoint, needed only for a request the journal does not know"
    )
    result.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="longest to wait for a running job")
    _output_options(result)
    _global_options(result, top=False)

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the journal's SQL schema ahead of a deploy",
        description="Apply falwrap's schema migrations to a SQLite or PostgreSQL store now and print the version.",
    )
    migrate.add_argument(
        "--store", metavar="URL", help="the store (default: FALWRAP_STORE_URL, else the command's journal)"
    )
    _global_options(migrate, top=False)


def _batch_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="run many jobs from a JSONL or CSV file, resumably",
        description="Run one job per line of INPUT (JSONL or CSV: prompt and parameters, optional id, operation "
        "and model), save the outputs under --out and one line per input in DIR/manifest.jsonl. Shows the count, "
        "models, estimated cost and time first. Run the same command again to resume: finished lines are skipped, "
        "jobs still running at fal are followed, nothing is paid for twice.",
    )
    batch.add_argument("input", metavar="INPUT", help="a .jsonl or .csv file (one job per line or row)")
    batch.add_argument("--out", metavar="DIR", required=True, help="where outputs and manifest.jsonl go")
    batch.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    batch.add_argument(
        "--max-cost", type=_money, metavar="USD", help="refuse (exit 6, nothing sent) when the estimate is above"
    )
    batch.add_argument(
        "--concurrency", type=_concurrency, metavar="N", help="jobs in flight at once (default: from the rate limit)"
    )
    batch.add_argument("--model", metavar="ID", help="endpoint for lines that name none")
    _global_options(batch, top=False)


def wants_json(argv: Sequence[str]) -> bool:
    """Whether a command line asks for JSON output, read before (and whether or not) it parses.

    Args:
        argv: The arguments.

    Returns:
        ``True`` when ``--json`` appears before any ``--``.
    """
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line.

    Args:
        argv: The arguments.

    Returns:
        The namespace (``command`` set).

    Raises:
        UsageError: the command line is not valid; the message says why and
            points at ``--help``.
        SystemExit: ``--help`` or ``--version`` printed their text.
    """
    return build_parser().parse_args(argv)
