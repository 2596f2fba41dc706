"""A minimal Flask app calling fal.ai through falwrap (see docs/web.md).

Run it::

    cd examples/flask_app
    FAL_KEY=... flask --app demo_flask run
    FAL_KEY=... flask --app demo_flask falwrap stats
    # several workers share limits and budget through Redis:
    FAL_KEY=... FALWRAP_REDIS_URL=redis://127.0.0.1:6379/0 gunicorn 'demo_flask:create_app()' -w 4 --threads 8

Uncaught falwrap errors become JSON answers through the extension's error
handler: a spent daily budget is a 429 with the friendly message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, request, url_for

from falwrap.contrib.flask import FalWrap, get_client, get_job_store
from falwrap.contrib.web import accepted_body, job_report, jsonable

#: The cheapest image model: a demo should not spend much.
DEFAULT_MODEL = "fal-ai/flux/schnell"


def _bad_request(message: str) -> tuple[dict[str, Any], int]:
    return {"error": {"type": "BadRequest", "code": "INVALID_INPUT", "message": message}}, 400


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` holds FAL_*/FALWRAP_* keys (unset ones come from the environment)."""
    app = Flask(__name__)
    app.config.update(config or {})
    FalWrap(app)

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
        """Submit a job and answer at once with 202; the page polls ``status_url``."""
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
        get_job_store().save(handle)
        status_path = url_for("job", request_id=handle.request_id)
        return accepted_body(handle, status_path), 202, {"Location": status_path}

    @app.get("/jobs/<request_id>")
    def job(request_id: str) -> Any:
        """Where a submitted job stands: 202 while running, 200 with the result once done."""
        status, body = job_report(get_client(), get_job_store(), request_id)
        return body, status

    @app.get("/stats")
    def stats() -> Any:
        """The ledger's stats and today's spend (every worker's with FALWRAP_REDIS_URL)."""
        client = get_client()
        return jsonable(
            {
                "stats": client.stats(),
                "daily_cost_usd": client.daily_cost(),
                "daily_budget_usd": client.config.daily_budget_usd,
                "shared": client.config.rate_limit.redis_url is not None,
            }
        )

    return app
