"""Glue shared by the Django and Flask integrations: settings, worker detection, stats text.

Framework settings use the environment variables' names (``FAL_KEY``,
``FAL_REQUESTS_PER_MINUTE``, ``FALWRAP_STORE_URL``, ...; the table is
:data:`falwrap.config.ENV_VARS`, documented in ``.env.example``).
A value set in the framework wins; the environment, then the ``.env`` file,
fill in what it leaves unset.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from falwrap.config import ENV_VARS, FalConfig, config_from_values, env_var, read_environment
from falwrap.errors import ConfigurationError

__all__ = [
    "KNOWN_NAMES",
    "config_from_settings",
    "env_file_setting",
    "has_api_key",
    "likely_workers",
    "merged_values",
    "shares_state",
    "stats_report",
    "unknown_names",
]

#: Every name a framework setting may use: the environment variables of
#: :data:`falwrap.config.ENV_VARS`, the integrations' own included.
KNOWN_NAMES = frozenset(var.name for var in ENV_VARS)

_KEY_NAMES = ("FAL_KEY", "FAL_API_KEY")


def _as_text(value: Any) -> str:
    """One setting as the string the environment would hold (``True`` -> ``"true"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal, str)):
        return str(value)
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    msg = f"{type(value).__name__} {value!r} is not valid: expected a string or a number."
    raise ConfigurationError(msg)


def env_file_setting(configured: Any = None) -> str | os.PathLike[str] | None:
    """Where the dotenv file is: the framework's ``FALWRAP_ENV_FILE``, else the environment's, else ``.env``.

    An empty string or ``None`` set in the framework means: read no file.

    Args:
        configured: The framework's ``FALWRAP_ENV_FILE`` value; ``...`` (Ellipsis) when it has none.

    Returns:
        The path, or ``None``.
    """
    value = os.environ.get("FALWRAP_ENV_FILE", ".env") if configured is ... else configured
    if value is None or value == "":
        return None
    path: str | os.PathLike[str] = value
    return path


def merged_values(
    settings: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
) -> dict[str, str]:
    """The settings as strings, with the environment and the ``.env`` file as fallback.

    ``None`` or an empty string in ``settings`` means "not set here".

    Args:
        settings: Framework settings keyed by the environment variables' names.
        environ: The environment (default ``os.environ``).
        env_file: A dotenv file read beneath the environment, or ``None``.

    Returns:
        Name -> value, framework settings winning.

    Raises:
        ConfigurationError: a setting is neither a string nor a number; the
            message names the setting (never its value when it is a key).
    """
    values = read_environment(env_file, os.environ if environ is None else environ)
    for name, value in settings.items():
        if value is None:
            continue
        try:
            text = _as_text(value).strip()
        except ConfigurationError:
            msg = f"{name} must be a string or a number, got {type(value).__name__}."
            raise ConfigurationError(msg, variable=name) from None
        if text:
            values[name] = text
    return values


def config_from_settings(
    settings: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
) -> FalConfig:
    """Build a :class:`~falwrap.FalConfig` from framework settings over the environment.

    Args:
        settings: Framework settings keyed by the environment variables' names.
        environ: The environment (default ``os.environ``).
        env_file: A dotenv file read beneath the environment, or ``None``.

    Returns:
        The validated config (it may lack a key: the client refuses that later).

    Raises:
        ConfigurationError: a value is invalid (``FALWRAP_WORKERS`` included);
            the message names it and what is expected.
    """
    values = merged_values(settings, environ=environ, env_file=env_file)
    if "FALWRAP_WORKERS" in values:
        env_var("FALWRAP_WORKERS").parse(values["FALWRAP_WORKERS"])
    return config_from_values(values)


def shares_state(config: FalConfig) -> bool:
    """Whether ``config`` keeps limits, ledger and jobs in a store other processes share.

    Args:
        config: The app's config.

    Returns:
        ``False`` for ``memory:`` (this process only), ``True`` for any other store.
    """
    return not config.store_url.startswith("memory:")


def has_api_key(values: Mapping[str, str]) -> bool:
    """Whether the merged values hold a fal key in any of its accepted forms.

    Args:
        values: From :func:`merged_values`.

    Returns:
        ``True`` for ``FAL_KEY``, ``FAL_API_KEY``, or both ``FAL_KEY_ID`` and ``FAL_KEY_SECRET``.
    """
    if any(values.get(name) for name in _KEY_NAMES):
        return True
    return bool(values.get("FAL_KEY_ID") and values.get("FAL_KEY_SECRET"))


def unknown_names(settings: Mapping[str, Any]) -> list[str]:
    """Setting names falwrap does not know (usually typos), sorted.

    Args:
        settings: Framework settings keyed by the environment variables' names.

    Returns:
        The unknown names.
    """
    return sorted(name for name in settings if name not in KNOWN_NAMES)


_WORKERS_FLAG = re.compile(r"^(?:-w|--workers)(?:=?(\d+))?$")


def _workers_in_args(args: Sequence[str]) -> int | None:
    """The worker count in gunicorn-style arguments (``-w 4``, ``-w4``, ``--workers=4``)."""
    found: int | None = None
    for i, arg in enumerate(args):
        match = _WORKERS_FLAG.match(arg)
        if match is None:
            continue
        raw = match.group(1) or (args[i + 1] if i + 1 < len(args) else "")
        if raw.isdigit():
            found = int(raw)
    return found


def likely_workers(
    values: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """How many server processes probably share this app's fal key: a guess for warnings.

    Looks at, first hit wins: ``FALWRAP_WORKERS`` (the explicit hint), gunicorn's
    ``-w``/``--workers`` in ``GUNICORN_CMD_ARGS`` or on the command line of a
    running gunicorn, then ``WEB_CONCURRENCY`` (read by gunicorn, uvicorn and
    most hosting platforms).

    Args:
        values: Merged settings (for ``FALWRAP_WORKERS``).
        environ: The environment (default ``os.environ``).
        argv: The command line (default ``sys.argv``).

    Returns:
        The count, at least 1.
    """
    env = os.environ if environ is None else environ
    args = sys.argv if argv is None else argv
    hint = (values or {}).get("FALWRAP_WORKERS") or env.get("FALWRAP_WORKERS")
    if hint and hint.strip().isdigit():
        return max(1, int(hint))
    candidates: list[int | None] = []
    try:
        candidates.append(_workers_in_args(shlex.split(env.get("GUNICORN_CMD_ARGS", ""))))
    except ValueError:  # unbalanced quotes: gunicorn would refuse it too
        candidates.append(None)
    if args and os.path.basename(args[0]).startswith("gunicorn"):
        candidates.append(_workers_in_args(args[1:]))
    concurrency = env.get("WEB_CONCURRENCY", "").strip()
    candidates.append(int(concurrency) if concurrency.isdigit() else None)
    for count in candidates:
        if count is not None:
            return max(1, count)
    return 1


def _money(value: Any) -> str:
    return f"${value}" if value is not None else "none"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def stats_report(stats: Mapping[str, Any], *, daily_cost: Decimal, budget: Decimal | None, shared: bool) -> str:
    """The ledger's stats as a short plain-text table for the CLI commands.

    Args:
        stats: From ``client.stats()``.
        daily_cost: Today's spend (UTC).
        budget: The daily budget, if any.
        shared: Whether the ledger is shared through the store (else: this process only).

    Returns:
        Lines of text, no trailing newline. Never contains the API key.
    """
    scope = "all processes sharing FALWRAP_STORE_URL" if shared else "this process only (FALWRAP_STORE_URL is memory:)"
    rate = stats.get("success_rate")
    lines = [
        f"falwrap ledger: {scope}",
        f"  spent today (UTC):  {_money(daily_cost)}   daily budget: {_money(budget)}",
        f"  calls:              {stats.get('total_calls', 0)} "
        f"({stats.get('successes', 0)} ok, {stats.get('failures', 0)} failed"
        + (f", {float(rate):.1%} success)" if rate is not None else ")"),
        f"  total cost:         {_money(stats.get('total_cost_usd'))}",
        f"  duration ms:        avg {_ms(stats.get('avg_duration_ms'))}  p50 {_ms(stats.get('p50_duration_ms'))}"
        f"  p95 {_ms(stats.get('p95_duration_ms'))}",
    ]
    by_model = stats.get("by_model") or {}
    if by_model:
        lines.append("  by model:")
        width = max(len(str(m)) for m in by_model)
        for model, row in sorted(by_model.items()):
            lines.append(
                f"    {model:<{width}}  calls {row.get('total_calls', 0):>5}  cost {_money(row.get('total_cost_usd'))}"
            )
    return "\n".join(lines)
