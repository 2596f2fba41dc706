"""Which function runs each ``falwrap`` subcommand.

Each command takes the :class:`~falwrap.cli.context.Context` (parsed
arguments, the redacting console, how to get a client), writes its results
and returns an exit code; errors propagate to :func:`falwrap.cli.main`, which
turns them into one friendly line (and a JSON document with ``--json``).
Commands import what they need when they run, so ``falwrap --help`` and
``falwrap models`` start fast.
"""

from __future__ import annotations

import argparse
import importlib

from falwrap.cli.context import Context
from falwrap.cli.output import Console

__all__ = ["COMMANDS", "run_command"]

#: Subcommand -> (module, function) that runs it.
COMMANDS: dict[str, tuple[str, str]] = {
    "image": ("falwrap.cli.generate", "image_command"),
    "video": ("falwrap.cli.generate", "video_command"),
    "models": ("falwrap.cli.browse", "models_command"),
    "select": ("falwrap.cli.browse", "select_command"),
    "stats": ("falwrap.cli.stats", "stats_command"),
    "config": ("falwrap.cli.show", "config_command"),
    "demo": ("falwrap.cli.demo", "demo_command"),
    "reconcile": ("falwrap.cli.jobs", "reconcile_command"),
    "history": ("falwrap.cli.jobs", "history_command"),
    "result": ("falwrap.cli.jobs", "result_command"),
    "migrate": ("falwrap.cli.jobs", "migrate_command"),
    "batch": ("falwrap.cli.batch", "batch_command"),
}


def run_command(args: argparse.Namespace, console: Console) -> int:
    """Run the subcommand ``args.command``.

    Args:
        args: From :func:`falwrap.cli.parser.build_parser`.
        console: Where to write.

    Returns:
        The exit code (0; failures raise).

    Raises:
        FalwrapError: a command failed; its class's ``exit_status`` is the exit code.
    """
    module, function = COMMANDS[args.command]
    command = getattr(importlib.import_module(module), function)
    context = Context(args, console)
    with context.logging():
        code: int = command(context)
        return code
