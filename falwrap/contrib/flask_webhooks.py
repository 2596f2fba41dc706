"""Flask's webhook endpoint for fal's deliveries, and the blinker signal sent once per finished job.

Register it::

    from falwrap.contrib.flask import webhook_blueprint
    app.register_blueprint(webhook_blueprint)        # POST /fal/webhook

and submit with ``webhook_url="https://your.host/fal/webhook"`` (or set
``FALWRAP_WEBHOOK_URL``). Receive finished jobs with the signal::

    from falwrap.contrib.flask import job_finished

    @job_finished.connect
    def on_job(sender, outcome, **kwargs):
        ...   # outcome.request_id, outcome.state, outcome.result

The signal is sent once per job, by the worker whose delivery settled it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from blinker import Namespace
from flask import Blueprint, Response, jsonify, request

from falwrap.contrib.webhook_views import webhook_answer

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["job_finished", "make_webhook_blueprint"]

_signals = Namespace()

#: Sent once per job fal reports finished through a webhook: ``sender`` is the Flask app,
#: ``outcome`` the :class:`~falwrap.webhook_outcomes.JobOutcome`.
job_finished = _signals.signal("falwrap-job-finished")


def make_webhook_blueprint(get_client: Callable[[], FalClient], *, url_prefix: str = "/fal") -> Blueprint:
    """A blueprint answering ``POST {url_prefix}/webhook`` for the client ``get_client`` returns."""
    blueprint = Blueprint("falwrap_webhooks", __name__, url_prefix=url_prefix)

    @blueprint.post("/webhook")
    def webhook() -> tuple[Response, int]:
        """Verify one of fal's webhook deliveries and settle its job in the journal."""
        from flask import current_app

        status, body, outcome = webhook_answer(get_client(), request.headers, request.get_data(cache=False))
        if outcome is not None and outcome.new:
            job_finished.send(current_app._get_current_object(), outcome=outcome)  # type: ignore[attr-defined]
        return jsonify(body), status

    return blueprint
