"""Flask integration: one shared client per app, configured from ``app.config``.

Use the environment variables' names as config keys (``FAL_KEY``,
``FAL_REQUESTS_PER_MINUTE``, ``FALWRAP_STORE_URL``, ... see ``.env.example``);
names left unset fall back to the environment, then to the ``.env`` file
(``FALWRAP_ENV_FILE`` in ``app.config`` or the environment, default ``".env"``;
``None`` reads none)::

    app = Flask(__name__)
    app.config["FAL_DAILY_BUDGET_USD"] = "25.00"
    FalWrap(app)                       # or: fal = FalWrap(); fal.init_app(app)

    @app.post("/image")
    def image():
        result = get_client().image(request.json["prompt"])
        return {"request_id": result.request_id, "cost_usd": str(result.cost_usd)}

``init_app`` builds the client at once, so a missing key or a bad value stops
the app at start-up with a :class:`~falwrap.ConfigurationError` naming it. It
stores the client at ``app.extensions["falwrap"]`` and the job store at
``app.extensions["falwrap_jobs"]``, answers any uncaught
:class:`~falwrap.FalwrapError` as JSON (429 for a spent budget), and adds the
``flask falwrap stats`` command.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import click
from flask import Flask, current_app, jsonify
from flask.cli import AppGroup

from falwrap.client import FalClient
from falwrap.contrib import _common
from falwrap.contrib.flask_webhooks import job_finished, make_webhook_blueprint
from falwrap.contrib.web import JobStore, error_response, job_store_for, jsonable
from falwrap.errors import FalwrapError

__all__ = [
    "EXTENSION_KEY",
    "JOBS_KEY",
    "FalWrap",
    "get_client",
    "get_job_store",
    "job_finished",
    "json_error",
    "webhook_blueprint",
]

#: ``app.extensions`` key of the client.
EXTENSION_KEY = "falwrap"
#: ``app.extensions`` key of the job store.
JOBS_KEY = "falwrap_jobs"


def _settings(app: Flask) -> dict[str, Any]:
    return {k: v for k, v in app.config.items() if k in _common.KNOWN_NAMES}


def json_error(exc: FalwrapError) -> tuple[Any, int, dict[str, str]]:
    """A Flask answer for ``exc``: JSON body, status and headers (see ``web.error_response``).

    Args:
        exc: The error.

    Returns:
        ``(response, status, headers)``, a tuple a Flask view may return.
    """
    mapped = error_response(exc)
    return jsonify(mapped.body), mapped.status, mapped.headers


falwrap_cli = AppGroup("falwrap", help="falwrap (fal.ai) commands.")


@falwrap_cli.command("stats")
@click.option("--model", default=None, help="Only this endpoint id, e.g. fal-ai/flux/schnell.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats_command(model: str | None, as_json: bool) -> None:
    """Show falwrap's call statistics and today's spend.

    With a shared FALWRAP_STORE_URL the ledger is shared by every worker; without it
    this shows only this (new) process's calls.
    """
    client = get_client()
    stats = client.stats(model)
    spent = client.daily_cost()
    budget = client.config.daily_budget_usd
    shared = _common.shares_state(client.config)
    if as_json:
        payload = {"stats": stats, "daily_cost_usd": spent, "daily_budget_usd": budget, "shared": shared}
        click.echo(json.dumps(jsonable(payload), indent=2, sort_keys=True))
    else:
        click.echo(_common.stats_report(stats, daily_cost=spent, budget=budget, shared=shared))


@attrs.define
class FalWrap:
    """The Flask extension: ``FalWrap(app)``, or ``FalWrap()`` then ``init_app(app)`` per app.

    One instance may serve several apps; each app gets its own client. The
    client is thread-safe, so every request thread of a worker shares it.

    Args:
        app: Initialise this app at once.

    Raises:
        ConfigurationError: as for :meth:`init_app`.
    """

    app: Flask | None = None

    def __attrs_post_init__(self) -> None:
        if self.app is not None:
            self.init_app(self.app)

    def init_app(self, app: Flask) -> None:
        """Build the app's client and job store, register the error handler and the CLI.

        Args:
            app: The Flask app; its ``config`` holds ``FAL_*``/``FALWRAP_*`` keys.

        Raises:
            ConfigurationError: no key, or an invalid value (the message names it).
        """
        env_file = _common.env_file_setting(app.config.get("FALWRAP_ENV_FILE", ...))
        config = _common.config_from_settings(_settings(app), env_file=env_file)
        client = FalClient(config)
        app.extensions[EXTENSION_KEY] = client
        app.extensions[JOBS_KEY] = job_store_for(client)
        app.register_error_handler(FalwrapError, json_error)
        app.cli.add_command(falwrap_cli)

    @property
    def client(self) -> FalClient:
        """The current app's client (needs an app context).

        Returns:
            The client.

        Raises:
            RuntimeError: outside an app context, or ``init_app`` was not called.
        """
        return get_client()


def get_client() -> FalClient:
    """The current app's :class:`~falwrap.FalClient` (needs an app context).

    Returns:
        ``current_app.extensions["falwrap"]``.

    Raises:
        RuntimeError: outside an app context, or ``FalWrap.init_app`` was not called.
    """
    client = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(client, FalClient):
        msg = "falwrap is not set up on this app: call FalWrap(app) or FalWrap().init_app(app) first."
        raise RuntimeError(msg)  # noqa: TRY004 - a missing setup step, not a wrong argument type
    return client


def get_job_store() -> JobStore:
    """The current app's submitted jobs: a view of its client's journal (every worker sharing the store sees them).

    Returns:
        ``current_app.extensions["falwrap_jobs"]``.

    Raises:
        RuntimeError: outside an app context, or ``FalWrap.init_app`` was not called.
    """
    store: JobStore | None = current_app.extensions.get(JOBS_KEY)
    if store is None:
        msg = "falwrap is not set up on this app: call FalWrap(app) or FalWrap().init_app(app) first."
        raise RuntimeError(msg)
    return store


#: ``POST /fal/webhook`` for fal's deliveries (see :mod:`falwrap.contrib.flask_webhooks`).
webhook_blueprint = make_webhook_blueprint(get_client)
