"""Django's webhook endpoint for fal's deliveries, and the signal sent once per finished job.

Route it::

    # urls.py
    from falwrap.contrib.django import webhook_view
    urlpatterns = [path("fal/webhook/", webhook_view)]

and submit with ``webhook_url="https://your.host/fal/webhook/"`` (or set
``FALWRAP_WEBHOOK_URL``). Receive finished jobs with the signal::

    from falwrap.contrib.django import job_finished

    @receiver(job_finished)
    def on_job(sender, outcome, **kwargs):
        ...   # outcome.request_id, outcome.state, outcome.result

The signal is sent once per job, by the worker whose delivery settled it, even
when fal delivers twice or two workers receive the same delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from falwrap.contrib.webhook_views import webhook_answer
from falwrap.webhooks import MAX_BODY_BYTES

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = ["job_finished", "make_webhook_view"]

#: Sent once per job fal reports finished through a webhook: ``sender`` is the view,
#: ``outcome`` the :class:`~falwrap.webhook_outcomes.JobOutcome`.
job_finished = Signal()


def make_webhook_view(get_client: Callable[[], FalClient]) -> Callable[[HttpRequest], HttpResponse]:
    """The webhook view for the client ``get_client`` returns (the integration's shared one)."""

    def webhook_view(request: HttpRequest) -> HttpResponse:
        """Verify one of fal's webhook deliveries and settle its job in the journal (CSRF-exempt, POST only)."""
        # Read the stream, not request.body: Django refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE
        # (2.5 MB by default) with an HTML 400, and fal's deliveries may be larger (data: URI outputs).
        # verify() bounds the size itself, answering body_too_large past MAX_BODY_BYTES.
        raw = request.read(MAX_BODY_BYTES + 1)
        status, body, outcome = webhook_answer(get_client(), request.headers, raw)
        if outcome is not None and outcome.new:
            job_finished.send(sender=view, outcome=outcome)
        return JsonResponse(body, status=status)

    view: Callable[[HttpRequest], HttpResponse] = csrf_exempt(require_POST(webhook_view))
    return view
