"""FakeFal: a real local HTTP emulator of fal's queue API, for tests, demos and benchmarks.

``with FakeFal() as fal:`` serves fal's queue (submit, status, status stream,
result, cancel), the synchronous ``fal.run`` host (output and SSE streams),
storage uploads (legacy and v3 CDN, multipart), output files and the platform
pricing and requests APIs on 127.0.0.1, with scripted faults, request counters
and a server-side billing record; jobs submitted with ``fal_webhook`` get
signed webhook deliveries.  ``Behaviour`` chooses between fal's real
behaviour and an ideal one.  The pytest plugin (``falwrap.testing.plugin``)
provides a ``fake_fal`` fixture.
"""

from falwrap.testing.behaviour import Behaviour, Retention
from falwrap.testing.billing import BillingRecord, billable_units
from falwrap.testing.emulator import FakeFal
from falwrap.testing.faults import ROUTES, Fault
from falwrap.testing.jobs import JobView
from falwrap.testing.models import FakeModel, JobFailure, default_models
from falwrap.testing.routing import RouteToFakeFal
from falwrap.testing.video import mp4_duration
from falwrap.testing.webhook_faults import WebhookFault
from falwrap.testing.webhooks import WebhookAttempt

__all__ = [
    "ROUTES",
    "Behaviour",
    "BillingRecord",
    "FakeFal",
    "FakeModel",
    "Fault",
    "JobFailure",
    "JobView",
    "Retention",
    "RouteToFakeFal",
    "WebhookAttempt",
    "WebhookFault",
    "billable_units",
    "default_models",
    "mp4_duration",
]
