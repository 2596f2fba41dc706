"""FakeFal: a real local HTTP emulator of fal's queue API, for tests, demos and benchmarks.

``with FakeFal() as fal:`` serves fal's queue (submit, status, status stream,
result, cancel), the synchronous ``fal.run`` host (output and SSE streams),
storage uploads (legacy and v3 CDN, multipart), output files and the platform
pricing and requests APIs on 127.0.0.1, with scripted faults, request counters
and a server-side billing record; jobs submitted with ``fal_webhook`` get
signed webhook deliveries.  ``Behaviour`` chooses between fal's real
behaviour and an ideal one.  The pytest plugin (``falwrap.testing.plugin``)
provides a ``fake_fal`` fixture.

Every name loads on first use, so that the pytest plugin (registered in every
pytest run wherever falwrap is installed) costs nothing until ``fake_fal`` is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each public name lives.
_HOMES = {
    "ROUTES": "faults",
    "Behaviour": "behaviour",
    "BillingRecord": "billing",
    "FakeFal": "emulator",
    "FakeModel": "models",
    "Fault": "faults",
    "JobFailure": "models",
    "JobView": "jobs",
    "Retention": "behaviour",
    "RouteToFakeFal": "routing",
    "WebhookAttempt": "webhooks",
    "WebhookFault": "webhook_faults",
    "billable_units": "billing",
    "default_models": "models",
    "mp4_duration": "video",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        msg = f"module 'falwrap.testing' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"falwrap.testing.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
