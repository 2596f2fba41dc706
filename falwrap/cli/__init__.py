"""The ``falwrap`` command: generate images and videos, run batches, browse models, read the journal and settings.

Its journal is a SQLite file in the user's data directory unless
``FALWRAP_STORE_URL`` names another store (:mod:`falwrap.cli.store`).

Exit codes tell scripts what happened: 0 success, 2 usage, 3 configuration, 4 a fal
API error, 5 timeout, 6 budget, 130 interrupted, 1 anything else;
:mod:`~falwrap.cli.exits` defines them, case by case.

Errors print one friendly line on stderr (``--debug`` adds the traceback);
with ``--json`` stdout carries exactly one JSON document, an ``{"error": ...}``
one on failure, a command line that does not parse included. Nothing written
ever contains the API key.

The package: :mod:`~falwrap.cli.parser` (the command line),
:mod:`~falwrap.cli.commands` (which function runs each subcommand),
:mod:`~falwrap.cli.exits` (exit codes), :mod:`~falwrap.cli.output` (the
redacting console) and :mod:`~falwrap.cli.progress` (the live status line).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from falwrap.cli.exits import (
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
from falwrap.cli.output import Console
from falwrap.cli.parser import build_parser, parse, wants_json
from falwrap.errors import FalwrapError

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``falwrap`` command.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (see the module docstring).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    console = Console(sys.stdout, sys.stderr)
    try:
        args = parse(arguments)
    except UsageError as exc:
        console.fail(exc, exc.message, exc.exit_status, False, wants_json(arguments))
        return exc.exit_status
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    debug = bool(getattr(args, "debug", False))
    as_json = bool(getattr(args, "json", False))
    from falwrap.cli.commands import run_command

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
        message = str(exc) if isinstance(exc, FalwrapError) else _unexpected(exc)
        console.fail(exc, message, code, debug, as_json)
        return code


def _unexpected(exc: BaseException) -> str:
    from falwrap.cli.generate import SaveError

    if isinstance(exc, SaveError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}. Check the path and the free space."
    return f"unexpected {type(exc).__name__}: {str(exc).rstrip('.')}. Run again with --debug and report it."
