"""``falwrap config``: every setting as the environment variable that sets it, as falwrap reads it now."""

from __future__ import annotations

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK

__all__ = ["config_command"]


def config_command(context: Context) -> int:
    """``falwrap config``: read the environment and ``.env`` as a client would, and show the result.

    Each library variable of :data:`falwrap.config.ENV_VARS` is shown in its
    own unit with the value the command's configuration holds (its default when
    unset; the store is the command's journal, :mod:`falwrap.cli.store`); the
    key only as its fingerprint. An invalid variable fails like any
    command (exit 3, naming it).
    """
    from falwrap.cli.store import cli_config, default_store_url
    from falwrap.config import ENV_VARS, settings_of

    config = cli_config()
    context.console.add_secret(config.api_key)
    shown = settings_of(config)
    if context.as_json:
        context.console.json({"settings": {name: value or None for name, value in shown.items()}})
        return EXIT_OK
    # The command's own default store, not the library's memory:.
    defaults = {var.name: var.default for var in ENV_VARS} | {"FALWRAP_STORE_URL": default_store_url()}
    rows = [
        (var.name, shown[var.name] or "unset", defaults[var.name] or "unset", var.value.unit)
        for var in ENV_VARS
        if var.name in shown
    ]
    context.console.table(("variable", "value", "default", "unit"), rows)
    return EXIT_OK
