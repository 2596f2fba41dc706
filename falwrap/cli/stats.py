"""``falwrap stats``: call statistics from the ledger of the shared store (``FALWRAP_STORE_URL``)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK
from falwrap.cli.output import Console, format_usd

if TYPE_CHECKING:
    from falwrap.config import FalConfig

__all__ = ["stats_command"]

_IN_PROCESS = (
    "No shared ledger is configured, so there are no stats to show here: falwrap keeps call statistics "
    "in the memory of the process that made the calls (FalClient.stats()). Set FALWRAP_STORE_URL to share "
    "one ledger between processes and read it with `falwrap stats`."
)


def stats_command(context: Context) -> int:
    """``falwrap stats``: the shared store's ledger statistics, or where stats live without one."""
    from falwrap.config import FalConfig
    from falwrap.errors import ConfigurationError

    config = FalConfig.from_env()
    context.console.add_secret(config.api_key)
    if config.store_url.startswith("memory:") or context.offline:
        if context.as_json:
            context.console.json({"ledger": "process", "message": _IN_PROCESS})
        else:
            context.console.out(_IN_PROCESS)
        return EXIT_OK
    if not config.api_key:
        msg = (
            "falwrap stats reads the ledger of one fal key, and none is set. "
            "Set FAL_KEY (environment or .env) to the key whose calls you want to see."
        )
        raise ConfigurationError(msg, variable="FAL_KEY")
    stats, today = _store_stats(config)
    if context.as_json:
        context.console.json(
            {"ledger": _kind(config), "key_fingerprint": config.key_fingerprint, "today_cost_usd": today, **stats}
        )
        return EXIT_OK
    _print_stats(context.console, config, stats, today)
    return EXIT_OK


def _kind(config: FalConfig) -> str:
    from falwrap.backends import scheme_of

    return scheme_of(config.store_url)


def _store_stats(config: FalConfig) -> tuple[dict[str, Any], Decimal]:
    """The stats and today's spend of the ledger the client's store keeps under this key's namespace."""
    from falwrap.backends import open_store
    from falwrap.errors import ConfigurationError
    from falwrap.ledger import JournalLedger

    try:
        store = open_store(config.store_url, namespace=config.key_fingerprint)
    except ImportError as exc:
        msg = f"FALWRAP_STORE_URL names a {_kind(config)} store but its driver is missing ({exc.name}): install it."
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL") from None
    try:
        ledger = JournalLedger(store.journal)
        return ledger.stats(), ledger.daily_cost()
    finally:
        store.close()


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def _print_stats(console: Console, config: FalConfig, stats: dict[str, Any], today: Decimal) -> None:
    rate = stats.get("success_rate")
    success = "-" if rate is None else f"{float(rate) * 100:.1f}%"
    console.table(
        ("", ""),
        [
            ("ledger", f"{_kind(config)} (key fingerprint {config.key_fingerprint})"),
            ("spent today (UTC)", format_usd(today)),
            ("calls", f"{stats['total_calls']} ({stats['successes']} ok, {stats['failures']} failed)"),
            ("success rate", success),
            ("total cost", format_usd(stats["total_cost_usd"])),
            (
                "duration",
                f"avg {_ms(stats['avg_duration_ms'])}, p50 {_ms(stats['p50_duration_ms'])}, "
                f"p95 {_ms(stats['p95_duration_ms'])}",
            ),
        ],
    )
    by_model = stats.get("by_model") or {}
    if by_model:
        console.out()
        console.table(
            ("model", "calls", "ok", "cost", "p50", "p95"),
            [
                (
                    model,
                    row["total_calls"],
                    row["successes"],
                    format_usd(row["total_cost_usd"]),
                    _ms(row["p50_duration_ms"]),
                    _ms(row["p95_duration_ms"]),
                )
                for model, row in sorted(by_model.items())
            ],
        )
