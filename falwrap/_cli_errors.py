"""Exit codes of the ``falwrap`` command and the mapping from errors to them.

Scripts branch on these, so they are part of the CLI's contract::

    0    success
    1    an unexpected error (a bug: run again with --debug and report it)
    2    usage: bad arguments or options, or no model fits the requirements
    3    configuration: missing key, invalid setting, unreachable Redis ledger
    4    fal API error: fal refused or failed the request, or could not be reached
    5    timeout: the deadline passed (the job was cancelled at fal)
    6    budget: the daily budget would be exceeded (nothing was sent)
    130  interrupted (Ctrl-C; the job was cancelled at fal)
"""

from __future__ import annotations

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


class UsageError(Exception):
    """A command line that parses but cannot work (an ``--out`` that cannot be written...)."""


def exit_code_for(error: BaseException) -> int:
    """The process exit code for an error a command raised.

    Args:
        error: The exception.

    Returns:
        One of the ``EXIT_*`` codes.
    """
    from falwrap.errors import (
        BackendUnavailableError,
        BudgetExceededError,
        ConfigurationError,
        FalApiError,
        FalTimeoutError,
        InvalidInputError,
        NoModelError,
        RateLimitTimeout,
    )

    # Order matters: FalTimeoutError is also a FalApiError.
    if isinstance(error, (FalTimeoutError, RateLimitTimeout)):
        return EXIT_TIMEOUT
    if isinstance(error, BudgetExceededError):
        return EXIT_BUDGET
    if isinstance(error, (ConfigurationError, BackendUnavailableError)):
        return EXIT_CONFIG
    if isinstance(error, (InvalidInputError, NoModelError, UsageError)):
        return EXIT_USAGE
    if isinstance(error, FalApiError):
        return EXIT_API
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR
