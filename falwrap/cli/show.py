"""``falwrap config``: every setting as the environment variable that sets it, as falwrap reads it now."""

from __future__ import annotations

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK

__all__ = ["config_command"]


def config_command(context: Context) -> int:
    """``falwrap config``: read the environment and ``.env`` as a client would, and show the result.

    Each library variable of :data:`falwrap.config.ENV_VARS` is shown in its
    own unit with the value the configuration holds (its default when unset);
    the key only as its fingerprint. An invalid variable fails like any
    command (exit 3, naming it).
    """
    from falwrap.config import ENV_VARS, FalConfig, settings_of

    config = FalConfig.from_env()
    context.console.add_secret(config.api_key)
    shown = settings_of(config)
    if context.as_json:
        context.console.json({"settings": {name: value or None for name, value in shown.items()}})
        return EXIT_OK
    rows = [
        (var.name, shown[var.name] or "unset", var.default or "unset", var.value.unit)
        for var in ENV_VARS
        if var.name in shown
    ]
    context.console.table(("variable", "value", "default", "unit"), rows)
    return EXIT_OK
