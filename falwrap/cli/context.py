"""What every ``falwrap`` command needs: its options, the console, the terminal, and a client."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from falwrap.cli.output import Console
from falwrap.cli.progress import ProgressPrinter

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["Context"]


class Context:
    """What every command needs: its options, the console, the terminal, and how to get a client."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.offline = bool(getattr(args, "offline", False))
        self.debug = bool(getattr(args, "debug", False))
        self.as_json = bool(getattr(args, "json", False))
        self.tty = _isatty(console.stderr)
        self._printer: ProgressPrinter | None = None

    @property
    def interactive(self) -> bool:
        """Whether a person can answer a question: stdin and stderr are terminals."""
        import sys

        return self.tty and _isatty(sys.stdin)

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
            handler = NoteHandler(self)
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

        Its store is the command's journal (:mod:`falwrap.cli.store`) unless ``--offline``.

        Raises:
            ConfigurationError: no key or an invalid setting; says how to try falwrap without a key.
        """
        import attrs

        from falwrap.cli.store import cli_config, store_hint
        from falwrap.client import FalClient
        from falwrap.errors import ConfigurationError

        config = cli_config()
        self.console.add_secret(config.api_key)
        if not self.offline:
            try:
                client = FalClient(config)
            except ConfigurationError as exc:
                if exc.variable != "FAL_KEY":
                    hinted = store_hint(exc)
                    if hinted is exc:
                        raise
                    raise hinted from exc
                msg = f"{exc.message} To try falwrap without a key, run `falwrap demo` or add --offline."
                raise ConfigurationError(msg, variable=exc.variable) from exc
            with client:
                yield client
            return
        from falwrap.testing import FakeFal

        with FakeFal() as fal:
            self.console.add_secret(fal.key)
            # Offline means self-contained: no shared store (ledger, limiter) either.
            local = attrs.evolve(config, api_key=fal.key, base_url=fal.url, store_url="memory:")
            self.note(f"offline: using the built-in FakeFal emulator at {fal.url}; nothing is billed")
            with FalClient(local) as client:
                yield client


class NoteHandler(logging.Handler):
    """Shows falwrap's warnings (retries) above the progress line on a terminal; drops them otherwise."""

    def __init__(self, context: Context) -> None:
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
