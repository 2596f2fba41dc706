"""Where the ``falwrap`` command keeps its journal: a SQLite file in the user's data directory by default.

The library's default store is ``memory:`` (a web app or a script chooses its
own). The command is different: each run is a new process, so a journal kept
in memory would forget today's spend at exit and a daily budget
(``FAL_DAILY_BUDGET_USD``) would start from zero on every run. So unless
``FALWRAP_STORE_URL`` (or its older name ``FALWRAP_REDIS_URL``) says otherwise,
the command uses ``sqlite:///$XDG_DATA_HOME/falwrap/journal.db`` (the
platform's user data directory when ``XDG_DATA_HOME`` is unset:
``~/.local/share/falwrap`` on Linux). ``FALWRAP_STORE_URL=memory:`` switches
the journal off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from falwrap.config import FalConfig
from falwrap.errors import ConfigurationError

if TYPE_CHECKING:
    from falwrap.backends.base import Store

__all__ = [
    "STORE_VARIABLES",
    "cli_config",
    "data_dir",
    "default_store_url",
    "is_default_store",
    "open_cli_store",
    "shown_store",
    "store_hint",
]

#: The variables that choose a store; when neither is set, the command's default applies.
STORE_VARIABLES = ("FALWRAP_STORE_URL", "FALWRAP_REDIS_URL")

#: The journal's file name in the data directory.
JOURNAL_FILE = "journal.db"


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The command's data directory: ``$XDG_DATA_HOME/falwrap``, else the platform's user data directory.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        The directory (not created here).
    """
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_DATA_HOME", "").strip()
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored; platformdirs reads it
    # on Linux only, and the README promises it is honoured on every platform.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "falwrap"
    from platformdirs import user_data_path

    return user_data_path("falwrap", appauthor=False)


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """The command's default store: the SQLite journal in :func:`data_dir`.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        A ``sqlite:///`` URL (the path percent-encoded, as the SQLite store reads it).
    """
    path = data_dir(environ) / JOURNAL_FILE
    return "sqlite:///" + quote(str(path).lstrip("/"), safe="/")


def is_default_store(environ: Mapping[str, str] | None = None) -> bool:
    """Whether no store variable is set (in the environment or ``.env``), so the command's default applies.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        ``True`` when neither ``FALWRAP_STORE_URL`` nor ``FALWRAP_REDIS_URL`` is set.
    """
    from falwrap.config.variables import read_environment

    values = read_environment(".env", os.environ if environ is None else environ)
    return not any(name in values for name in STORE_VARIABLES)


def cli_config(environ: Mapping[str, str] | None = None) -> FalConfig:
    """The settings the command's client uses: :meth:`FalConfig.from_env`, with the command's default store.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        The validated config.

    Raises:
        ConfigurationError: a variable is invalid (named, as written).
    """
    import attrs

    env = os.environ if environ is None else environ
    config = FalConfig.from_env(environ=env)
    if is_default_store(env):
        return attrs.evolve(config, store_url=default_store_url(env))
    return config


def store_hint(error: ConfigurationError, environ: Mapping[str, str] | None = None) -> ConfigurationError:
    """``error`` with a way out added when it is about the command's default store, which nobody chose.

    Args:
        error: Raised while opening the store.
        environ: The environment (default ``os.environ``).

    Returns:
        The error to raise (``error`` itself when a store variable is set).
    """
    if error.variable != "FALWRAP_STORE_URL" or not is_default_store(environ):
        return error
    msg = (
        f"{error.message} This is the falwrap command's default journal ({data_dir(environ)}): set "
        "XDG_DATA_HOME to a writable directory, FALWRAP_STORE_URL to another store, or "
        "FALWRAP_STORE_URL=memory: to run without a journal."
    )
    return ConfigurationError(msg, variable="FALWRAP_STORE_URL")


def open_cli_store(config: FalConfig) -> Store:
    """The store ``config`` names, under its key's namespace, for commands that read the journal without a client.

    Args:
        config: From :func:`cli_config`.

    Returns:
        The store; the caller closes it.

    Raises:
        ConfigurationError: the store cannot be opened, or its driver is not installed.
    """
    from falwrap.backends import open_store, scheme_of

    try:
        return open_store(config.store_url, namespace=config.key_fingerprint)
    except ImportError as exc:
        kind = scheme_of(config.store_url)
        msg = f"FALWRAP_STORE_URL names a {kind} store but its driver is missing ({exc.name}): install it."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from None
    except ConfigurationError as exc:
        hinted = store_hint(exc)
        if hinted is exc:
            raise
        raise hinted from exc


def shown_store(config: FalConfig) -> str:
    """The store's URL as it may be shown (no password)."""
    from falwrap.config.rules import redact_url

    return redact_url(config.store_url) or config.store_url
