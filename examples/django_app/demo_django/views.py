"""JSON views over the shared falwrap client, and what the app does when fal reports a job finished.

Any falwrap error a view raises becomes a JSON answer through
``FalwrapErrorMiddleware``: a spent daily budget is a 429 with the friendly
message, bad input a 400, a fal outage a 502.

With ``FALWRAP_WEBHOOK_URL`` set (the public URL of ``/fal/webhook/``), every
submission carries it and fal POSTs the outcome there when the job ends:
falwrap's ``webhook_view`` verifies it, settles the job in the journal once and
sends ``job_finished`` once, which :func:`job_finished_received` logs and
stores.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from falwrap import JobOutcome
from falwrap.backends import scheme_of
from falwrap.contrib.django import get_client, get_job_store, job_finished
from falwrap.contrib.web import accepted_body, job_report, jsonable

#: The cheapest image model: a demo should not spend much.
DEFAULT_MODEL = "fal-ai/flux/schnell"

logger = logging.getLogger("demo_django")


def _append_json_line(path: str, record: Mapping[str, Any]) -> None:
    # One write(2) on an O_APPEND descriptor: lines from several worker processes never interleave.
    line = (json.dumps(jsonable(record)) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@receiver(job_finished)
def job_finished_received(sender: Any, outcome: JobOutcome, **kwargs: Any) -> None:
    """Sent once per job a webhook settled: log it, and keep it where the app keeps finished jobs.

    A real app would update its database or notify the user here; the demo appends
    one JSON line to ``settings.DEMO_FINISHED_JOBS_FILE`` when that names a file.
    """
    logger.info("fal job %s finished: %s (cost $%s)", outcome.request_id, outcome.state, outcome.cost_usd)
    path = getattr(settings, "DEMO_FINISHED_JOBS_FILE", None)
    if path:
        record = {"request_id": outcome.request_id, "job_id": outcome.job_id, "state": str(outcome.state),
                  "cost_usd": outcome.cost_usd, "error_code": outcome.error_code, "pid": os.getpid()}  # fmt: skip
        _append_json_line(path, record)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _bad_request(message: str) -> JsonResponse:
    return JsonResponse({"error": {"type": "BadRequest", "code": "INVALID_INPUT", "message": message}}, status=400)


# A JSON API without cookie sessions: CSRF protection does not apply.
@csrf_exempt
@require_POST
def image(request: HttpRequest) -> JsonResponse:
    """Generate an image and wait for it (seconds): ``{"prompt": ..., "model"?: ..., "size"?: ...}``."""
    body = _body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return _bad_request("Send JSON with a text 'prompt'.")
    result = get_client().image(prompt, model=body.get("model") or DEFAULT_MODEL, size=body.get("size"))
    return JsonResponse(
        {
            "request_id": result.request_id,
            "model": result.model,
            "cost_usd": str(result.cost_usd),
            "duration_ms": result.duration_ms,
            "images": [{"url": i.url, "width": i.width, "height": i.height} for i in result.images],
        }
    )


@csrf_exempt
@require_POST
def submit_job(request: HttpRequest) -> JsonResponse:
    """Submit a job and answer at once with 202: ``{"prompt": ..., "model"?: ..., "arguments"?: {...}}``.

    For anything slow (a video takes minutes): the request thread is free at
    once, and the page polls ``status_url``. ``submit()`` sends ``FALWRAP_WEBHOOK_URL``
    when it is set: fal then POSTs the outcome to ``/fal/webhook/``. The URL is a
    setting, not built from the request's ``Host`` header, which the client
    chooses (and a proxy may rewrite).
    """
    body = _body(request)
    prompt, model = body.get("prompt"), body.get("model") or DEFAULT_MODEL
    extra = body.get("arguments") or {}
    if not isinstance(prompt, str) or not isinstance(extra, dict):
        return _bad_request("Send JSON with a text 'prompt' and optionally an 'arguments' object.")
    client = get_client()
    if model not in client.catalog:
        # Only known models: their arguments are validated and their cost estimated.
        return _bad_request(f"Unknown model {model!r}.")
    handle = client.submit(model, {**extra, "prompt": prompt})
    status_path = reverse("job", kwargs={"request_id": handle.request_id})
    response = JsonResponse(accepted_body(handle, status_path), status=202)
    response["Location"] = status_path
    return response


@require_GET
def job(request: HttpRequest, request_id: str) -> JsonResponse:
    """Where a submitted job stands: 202 while running, 200 with the result once done (from the journal)."""
    status, body = job_report(get_client(), get_job_store(), request_id)
    return JsonResponse(body, status=status)


@require_GET
def stats(request: HttpRequest) -> JsonResponse:
    """The ledger's stats and today's spend (every worker's with a shared FALWRAP_STORE_URL)."""
    client = get_client()
    return JsonResponse(
        jsonable(
            {
                "stats": client.stats(),
                "daily_cost_usd": client.daily_cost(),
                "daily_budget_usd": client.config.daily_budget_usd,
                "shared": scheme_of(client.config.store_url) != "memory",
            }
        )
    )
