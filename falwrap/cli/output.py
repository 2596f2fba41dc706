"""Everything the ``falwrap`` command writes passes through here, with secrets redacted.

Redaction is the last line of defence, not the first: no message is built
with the key in it. But a traceback, a log line from a library or a proxy's
error page can echo what they were given, and the promise is that the key
never reaches a terminal, a CI log or a pasted bug report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import traceback
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

__all__ = ["REDACTED", "Console", "RedactingStream", "format_usd", "secrets_from_environment"]

REDACTED = "***"

#: Shorter fragments are not redacted: replacing every "ab" would garble output and hide nothing.
MIN_SECRET_LENGTH = 6

_KEY_VARIABLES = ("FAL_KEY", "FAL_API_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")


def secrets_from_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """The key material in the environment, whole and split into id and secret.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        Strings that must never be printed.
    """
    env = os.environ if environ is None else environ
    return [value for name in _KEY_VARIABLES if (value := env.get(name, "").strip())]


def format_usd(amount: Decimal | None) -> str:
    """``$0.025`` for ``Decimal("0.025000")``: exact, without trailing zeros or an exponent.

    Args:
        amount: USD, or ``None``.

    Returns:
        The text; ``-`` for ``None``.
    """
    if amount is None:
        return "-"
    text = format(amount.normalize(), "f")
    return f"${text}" if "." in text else f"${text}.00"


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class Console:
    """stdout for results, stderr for messages, both redacted.

    Args:
        stdout: Where results go.
        stderr: Where messages, progress and errors go.
        secrets: Strings to redact from the start (the environment's keys are always added).
    """

    def __init__(self, stdout: TextIO, stderr: TextIO, secrets: Iterable[str] = ()) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self._secrets: list[str] = []
        for secret in (*secrets_from_environment(), *secrets):
            self.add_secret(secret)

    # -- redaction ----------------------------------------------------------------------------

    def add_secret(self, secret: str | None) -> None:
        """Never print ``secret`` (nor, for a ``key_id:key_secret`` key, either half).

        Args:
            secret: The key, or ``None`` (ignored).
        """
        if not secret:
            return
        parts = [secret, *secret.split(":")] if ":" in secret else [secret]
        for part in parts:
            if len(part) >= MIN_SECRET_LENGTH and part not in self._secrets:
                self._secrets.append(part)
        # Longest first, so a whole key is replaced before its halves could split it.
        self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``.

        Args:
            text: Anything about to be written.

        Returns:
            The safe text.
        """
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    # -- writing ------------------------------------------------------------------------------

    def out(self, text: str = "") -> None:
        """Write one line of results to stdout.

        Args:
            text: The line.
        """
        self.stdout.write(self.redact(text) + "\n")
        self.stdout.flush()

    def err(self, text: str) -> None:
        """Write one line of messages to stderr.

        Args:
            text: The line.
        """
        self.stderr.write(self.redact(text) + "\n")
        self.stderr.flush()

    def json(self, document: Any) -> None:
        """Write ``document`` as the one JSON document on stdout (Decimals as exact strings).

        Args:
            document: JSON-serialisable data; Decimals and Paths are converted.
        """
        self.out(json.dumps(document, indent=2, default=_json_default))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Write an aligned plain-text table on stdout.

        Args:
            headers: Column titles.
            rows: Cells (converted with ``str``).
        """
        cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            self.out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def error(self, message: str) -> None:
        """Write a friendly one-line error on stderr.

        Args:
            message: What happened and what to do.
        """
        self.err("falwrap: error: " + " ".join(message.split()))

    def fail(self, exc: BaseException, message: str, code: int, debug: bool, as_json: bool) -> None:
        """Report a failed command: traceback when debugging, one line on stderr, JSON on stdout.

        Args:
            exc: The error.
            message: Its friendly message.
            code: The exit code the command ends with.
            debug: Show the traceback first.
            as_json: Also write an ``{"error": ...}`` document on stdout.
        """
        if debug:
            self.stderr.write(self.redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
        self.error(message)
        if as_json:
            document: dict[str, Any] = {
                "type": type(exc).__name__,
                "message": " ".join(message.split()),
                "exit_code": code,
            }
            for attribute in ("error_code", "status_code", "request_id", "field", "variable"):
                value = getattr(exc, attribute, None)
                if value is not None:
                    document[attribute] = value
            with contextlib.suppress(OSError):
                self.json({"error": document})

    def silence(self) -> None:
        """Stop writing to stdout (its reader has gone away)."""
        devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        if _has_fileno(self.stdout):
            # Python flushes sys.stdout at exit; into the closed pipe that would print a second error.
            os.dup2(devnull.fileno(), self.stdout.fileno())
        self.stdout = devnull

    def redacting(self, stream: TextIO) -> RedactingStream:
        """``stream`` for libraries that write to it themselves (rich's progress bar and tables), redacted.

        Args:
            stream: Usually :attr:`stderr`.

        Returns:
            A text stream that redacts everything written through it.
        """
        return RedactingStream(self, stream)

    def log_handler(self, level: int) -> logging.Handler:
        """A logging handler writing redacted records to stderr.

        Args:
            level: The least severe level shown.

        Returns:
            The handler.
        """
        return _RedactingHandler(self, level)


class RedactingStream:
    """A text stream passing every write through :meth:`Console.redact`; terminal queries go to the stream.

    Args:
        console: Knows the secrets.
        stream: Where the text goes.
    """

    def __init__(self, console: Console, stream: TextIO) -> None:
        self._console = console
        self._stream = stream

    @property
    def encoding(self) -> str:
        """The stream's encoding."""
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        """Write ``text`` with every secret redacted; returns the length of ``text`` (as written by the caller)."""
        self._stream.write(self._console.redact(text))
        return len(text)

    def flush(self) -> None:
        """Flush the stream."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Whether the stream is a terminal."""
        try:
            return bool(self._stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def fileno(self) -> int:
        """The stream's descriptor (rich reads the terminal's size from it)."""
        return self._stream.fileno()


def _has_fileno(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    return True


class _RedactingHandler(logging.Handler):
    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self._console = console
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._console.err(self.format(record))
        except Exception:
            self.handleError(record)
