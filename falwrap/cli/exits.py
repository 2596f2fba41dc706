"""Exit codes of the ``falwrap`` command and the mapping from errors to them.

Scripts branch on these, so they are part of the CLI's contract::

    0    success
    1    an unexpected error (a bug: run again with --debug and report it),
         or an output that was generated but could not be saved to disk
    2    usage: bad arguments or options, or no model fits the requirements
    3    configuration: missing key, invalid setting, unreachable shared store
    4    fal API error: fal refused or failed the request, or could not be reached
    5    timeout: the deadline passed (the job was cancelled at fal)
    6    budget: the daily budget would be exceeded (nothing was sent)
    130  interrupted (Ctrl-C; the job was cancelled at fal)

Each falwrap error class carries its status (``exit_status``, see
:mod:`falwrap.errors`); this module only adds the command's own cases.
"""

from __future__ import annotations

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
    "exit_code_for",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_API = 4
EXIT_TIMEOUT = 5
EXIT_BUDGET = 6
EXIT_INTERRUPTED = 130


class UsageError(FalwrapError):
    """A command line that parses but cannot work (an ``--out`` that cannot be written...)."""

    code = "USAGE"
    exit_status = EXIT_USAGE
    http_status = 400


def exit_code_for(error: BaseException) -> int:
    """The process exit code for an error a command raised.

    Args:
        error: The exception.

    Returns:
        The error class's ``exit_status`` for a falwrap error, 130 for
        ``KeyboardInterrupt``, else 1.
    """
    if isinstance(error, FalwrapError):
        return error.exit_status
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR
