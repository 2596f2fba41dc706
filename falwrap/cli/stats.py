"""``falwrap stats``: call statistics and today's spend from the command's journal.

That is the SQLite journal in the user's data directory unless ``FALWRAP_STORE_URL``
names another store (see :mod:`falwrap.cli.store`), so it covers every run of the
command, and every process sharing that store.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK
from falwrap.cli.output import Console, format_usd
from falwrap.cli.store import shown_store

if TYPE_CHECKING:
    from falwrap.config import FalConfig

__all__ = ["stats_command"]

_IN_PROCESS = (
    "The journal is switched off (FALWRAP_STORE_URL=memory:), so there are no stats to show here: "
    "falwrap keeps call statistics in the memory of the process that made the calls (FalClient.stats()). "
    "Unset FALWRAP_STORE_URL to use the command's journal in your data directory, or point it at a shared store."
)


def stats_command(context: Context) -> int:
    """``falwrap stats``: the journal's statistics and today's spend, or where stats live without one."""
    from falwrap.cli.store import cli_config
    from falwrap.errors import ConfigurationError

    config = cli_config()
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
            {
                "ledger": _kind(config),
                "store": shown_store(config),
                "key_fingerprint": config.key_fingerprint,
                "today_cost_usd": today,
                "daily_budget_usd": config.daily_budget_usd,
                **stats,
            }
        )
        return EXIT_OK
    _print_stats(context.console, config, stats, today)
    return EXIT_OK


def _kind(config: FalConfig) -> str:
    from falwrap.backends import scheme_of

    return scheme_of(config.store_url)


def _store_stats(config: FalConfig) -> tuple[dict[str, Any], Decimal]:
    """The stats and today's spend of the ledger the client's store keeps under this key's namespace."""
    from falwrap.cli.store import open_cli_store
    from falwrap.ledger import JournalLedger

    store = open_cli_store(config)
    try:
        ledger = JournalLedger(store.journal)
        return ledger.stats(), ledger.daily_cost()
    finally:
        store.close()


def _spent(today: Decimal, budget: Decimal | None) -> str:
    if budget is None:
        return format_usd(today)
    return f"{format_usd(today)} of the {format_usd(budget)} daily budget (FAL_DAILY_BUDGET_USD)"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def _print_stats(console: Console, config: FalConfig, stats: dict[str, Any], today: Decimal) -> None:
    rate = stats.get("success_rate")
    success = "-" if rate is None else f"{float(rate) * 100:.1f}%"
    console.table(
        ("", ""),
        [
            ("ledger", f"{shown_store(config)} (key fingerprint {config.key_fingerprint})"),
            ("spent today (UTC)", _spent(today, config.daily_budget_usd)),
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
