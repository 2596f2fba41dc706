"""A minimal Flask app calling fal.ai through falwrap (see docs/web.md).

Run it::

    cd examples/flask_app
    FAL_KEY=... flask --app demo_flask run
    FAL_KEY=... flask --app demo_flask falwrap stats
    # several workers share limits, budget and jobs through one store (Redis or PostgreSQL),
    # and fal calls back when a job ends:
    FAL_KEY=... FALWRAP_STORE_URL=redis://127.0.0.1:6379/0 \
        FALWRAP_WEBHOOK_URL=https://your.host/fal/webhook \
        gunicorn 'demo_flask:create_app()' -w 4 --threads 8

``POST /jobs`` submits and answers 202 at once. With ``FALWRAP_WEBHOOK_URL``
set, fal POSTs the job's outcome to ``/fal/webhook`` when it ends: the delivery
is verified, the job settled in the journal once (whichever worker receives
it, however often fal delivers it) and ``job_finished`` sent once, which this
app logs and appends to ``DEMO_FINISHED_JOBS_FILE`` when that names a file (a
real app would update its database or notify the user there). ``GET
/jobs/<id>`` answers from the journal once the job is settled; until then it
asks fal (the fallback when no webhook can reach the app).

Uncaught falwrap errors become JSON answers through the extension's error
handler: a spent daily budget is a 429 with the friendly message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, request, url_for

from falwrap import JobOutcome
from falwrap.backends import scheme_of
from falwrap.contrib.flask import FalWrap, get_client, get_job_store, job_finished, webhook_blueprint
from falwrap.contrib.web import accepted_body, job_report, jsonable

#: The cheapest image model: a demo should not spend much.
DEFAULT_MODEL = "fal-ai/flux/schnell"

logger = logging.getLogger("demo_flask")


def _append_json_line(path: str, record: Mapping[str, Any]) -> None:
    # One write(2) on an O_APPEND descriptor: lines from several worker processes never interleave.
    line = (json.dumps(jsonable(record)) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _job_finished(app: Flask, outcome: JobOutcome, **_: Any) -> None:
    """Sent once per job a webhook settled: log it, and keep it where the app keeps finished jobs."""
    logger.info("fal job %s finished: %s (cost $%s)", outcome.request_id, outcome.state, outcome.cost_usd)
    path = app.config.get("DEMO_FINISHED_JOBS_FILE")
    if path:
        record = {"request_id": outcome.request_id, "job_id": outcome.job_id, "state": str(outcome.state),
                  "cost_usd": outcome.cost_usd, "error_code": outcome.error_code, "pid": os.getpid()}  # fmt: skip
        _append_json_line(path, record)


def _bad_request(message: str) -> tuple[dict[str, Any], int]:
    return {"error": {"type": "BadRequest", "code": "INVALID_INPUT", "message": message}}, 400


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` holds FAL_*/FALWRAP_* keys (unset ones come from the environment)."""
    app = Flask(__name__)
    app.config["DEMO_FINISHED_JOBS_FILE"] = os.environ.get("DEMO_FINISHED_JOBS_FILE")
    app.config.update(config or {})
    FalWrap(app)
    app.register_blueprint(webhook_blueprint)  # POST /fal/webhook
    job_finished.connect(_job_finished, app)

    @app.post("/image")
    def image() -> Any:
        """Generate an image and wait for it (seconds): ``{"prompt": ..., "model"?: ..., "size"?: ...}``."""
        body = request.get_json(silent=True) or {}
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return _bad_request("Send JSON with a text 'prompt'.")
        result = get_client().image(prompt, model=body.get("model") or DEFAULT_MODEL, size=body.get("size"))
        return {
            "request_id": result.request_id,
            "model": result.model,
            "cost_usd": str(result.cost_usd),
            "duration_ms": result.duration_ms,
            "images": [{"url": i.url, "width": i.width, "height": i.height} for i in result.images],
        }

    @app.post("/jobs")
    def submit_job() -> Any:
        """Submit a job and answer at once with 202; the page polls ``status_url``.

        ``submit()`` sends ``FALWRAP_WEBHOOK_URL`` when it is set: fal then POSTs the
        outcome to ``/fal/webhook``. The URL is a setting, not built from the request's
        ``Host`` header, which the client chooses (and a proxy may rewrite).
        """
        body = request.get_json(silent=True) or {}
        prompt, model = body.get("prompt"), body.get("model") or DEFAULT_MODEL
        extra = body.get("arguments") or {}
        if not isinstance(prompt, str) or not isinstance(extra, dict):
            return _bad_request("Send JSON with a text 'prompt' and optionally an 'arguments' object.")
        client = get_client()
        if model not in client.catalog:
            # Only known models: their arguments are validated and their cost estimated.
            return _bad_request(f"Unknown model {model!r}.")
        handle = client.submit(model, {**extra, "prompt": prompt})
        status_path = url_for("job", request_id=handle.request_id)
        return accepted_body(handle, status_path), 202, {"Location": status_path}

    @app.get("/jobs/<request_id>")
    def job(request_id: str) -> Any:
        """Where a submitted job stands: 202 while running, 200 with the result once done (from the journal)."""
        status, body = job_report(get_client(), get_job_store(), request_id)
        return body, status

    @app.get("/stats")
    def stats() -> Any:
        """The ledger's stats and today's spend (every worker's with a shared FALWRAP_STORE_URL)."""
        client = get_client()
        return jsonable(
            {
                "stats": client.stats(),
                "daily_cost_usd": client.daily_cost(),
                "daily_budget_usd": client.config.daily_budget_usd,
                "shared": scheme_of(client.config.store_url) != "memory",
            }
        )

    return app
