"""``manage.py falwrap_stats``: calls, success rate, durations and spend from the ledger."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from falwrap.contrib import _common
from falwrap.contrib.django import get_client
from falwrap.contrib.web import jsonable
from falwrap.errors import FalwrapError


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    """Print the ledger's stats and today's spend.

    With a shared ``FALWRAP_STORE_URL`` the ledger is shared, so this shows every
    worker's calls; without it, only this (new) process's, which is empty.
    """

    help = "Show falwrap's call statistics and today's spend (shared by every worker with FALWRAP_STORE_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Add ``--model`` and ``--json``.

        Args:
            parser: Django's argument parser.
        """
        parser.add_argument("--model", help="Only this endpoint id, e.g. fal-ai/flux/schnell.")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the stats.

        Args:
            *args: Unused.
            **options: ``model`` and ``json``.

        Raises:
            CommandError: the client cannot be built (no key, bad setting, Redis down).
        """
        try:
            client = get_client()
            stats = client.stats(options.get("model"))
            spent = client.daily_cost()
        except FalwrapError as exc:
            raise CommandError(str(exc)) from exc
        budget = client.config.daily_budget_usd
        shared = _common.shares_state(client.config)
        if options.get("json"):
            payload = {"stats": stats, "daily_cost_usd": spent, "daily_budget_usd": budget, "shared": shared}
            self.stdout.write(json.dumps(jsonable(payload), indent=2, sort_keys=True))
            return
        self.stdout.write(_common.stats_report(stats, daily_cost=spent, budget=budget, shared=shared))
