"""Django's webhook view: fal's deliveries verified, settled in the journal once, answered 200/400/401/405.

The example project (``examples/django_app``) serves the view at ``/fal/webhook/``.
Real deliveries come from FakeFal over HTTP to the project's WSGI app served by
werkzeug in a thread; crafted ones (signed with FakeFal's key, or tampered with)
go through Django's test client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import contrib_django_setup  # noqa: F401  (configures Django before the imports below)
import pytest
from contrib_helpers import clear_ambient
from django.core.wsgi import get_wsgi_application
from django.test import Client
from werkzeug.serving import make_server

from falwrap import FalClient
from falwrap.contrib import django as fw_django
from falwrap.journal import JobState
from falwrap.testing import FakeFal, WebhookFault
from tests.helpers.deliveries import TAMPERINGS, signed_delivery, tampered

SCHNELL = "fal-ai/flux/schnell"
WEBHOOK = "/fal/webhook/"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """Short jobs; fal's two-hour retry schedule run in about 4 s."""
    with FakeFal(latency=0.05, webhook_time_scale=0.0005) as server:
        yield server


@pytest.fixture
def served() -> Iterator[str]:
    """The example project's WSGI app on a free 127.0.0.1 port, in a thread: its base URL."""
    server = make_server("127.0.0.1", 0, get_wsgi_application(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def configured(settings: Any, fal: FakeFal, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """settings.FALWRAP pointing at FakeFal and its webhook keys; no webhook URL (deliveries are crafted)."""
    clear_ambient(monkeypatch)
    settings.FALWRAP_ENV_FILE = None
    settings.FALWRAP = {
        "FAL_KEY": fal.key, "FAL_BASE_URL": fal.url, "FAL_REQUESTS_PER_MINUTE": 600_000, "FAL_RATE_BURST": 100,
        "FALWRAP_WEBHOOK_JWKS_URL": fal.webhook_jwks_url,
    }  # fmt: skip
    yield settings
    fw_django.reset()


class Signals:
    """Collects the outcomes ``job_finished`` carries."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, sender: Any, outcome: Any, **kwargs: Any) -> None:
        with self._lock:
            self.outcomes.append(outcome)


@pytest.fixture
def signals() -> Iterator[Signals]:
    """Every job_finished signal sent while the test runs."""
    collector = Signals()
    fw_django.job_finished.connect(collector, weak=False)
    yield collector
    fw_django.job_finished.disconnect(collector)


def _client() -> FalClient:
    return fw_django.get_client()


def _genuine(fal: FakeFal) -> tuple[bytes, dict[str, str], str]:
    """A job submitted without a webhook, and a delivery for it signed with FakeFal's key."""
    handle = _client().submit(SCHNELL, {"prompt": "a cat"})
    body, headers = signed_delivery(fal, handle.request_id)
    return body, headers, handle.request_id


def _post(body: bytes, headers: dict[str, str], *, csrf: bool = False) -> Any:
    client = Client(enforce_csrf_checks=csrf)
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return client.post(WEBHOOK, data=body, content_type="application/json", **extra)


def test_fal_deliveries_over_http_settle_each_job_once_and_signal_once(
    configured: Any, fal: FakeFal, served: str, signals: Signals, tmp_path: Path
) -> None:
    """Jobs from POST /jobs, each delivered twice and out of order: settled once, one signal, ledger == bill."""
    configured.FALWRAP = {**configured.FALWRAP, "FALWRAP_WEBHOOK_URL": f"{served}{WEBHOOK}"}
    configured.DEMO_FINISHED_JOBS_FILE = str(tmp_path / "finished.jsonl")
    fal.inject_webhook(WebhookFault(copies=2, reorder_batch=4), times=8)
    web = Client()
    accepted = [web.post("/jobs", {"prompt": f"cat {i}"}, content_type="application/json") for i in range(8)]
    assert [a.status_code for a in accepted] == [202] * 8
    ids = sorted(a.json()["request_id"] for a in accepted)
    assert fal.webhooks.wait_idle(60)
    assert fal.webhooks.deliveries == 16
    journal = _client().ledger.journal
    for request_id in ids:
        entry = journal.find(request_id)
        assert entry is not None
        assert (entry.state, entry.recorded) == (JobState.SUCCEEDED, True)
    assert sorted(o.request_id for o in signals.outcomes) == ids
    stored = [json.loads(line) for line in Path(configured.DEMO_FINISHED_JOBS_FILE).read_text().splitlines()]
    assert sorted(line["request_id"] for line in stored) == ids
    assert _client().stats()["total_calls"] == 8
    assert _client().daily_cost() == fal.billed_total == Decimal("0.024")
    before = fal.counters
    answer = web.get(f"/jobs/{ids[0]}")
    assert answer.status_code == 200
    assert answer.json()["status"] == "COMPLETED"
    assert fal.counters == before


def test_the_view_is_csrf_exempt(configured: Any, fal: FakeFal, signals: Signals, settings: Any) -> None:
    """With CsrfViewMiddleware on and checks enforced, a tokenless delivery is still accepted (fal sends no token)."""
    settings.MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware", *settings.MIDDLEWARE]
    body, headers, request_id = _genuine(fal)
    answer = _post(body, headers, csrf=True)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"request_id": request_id, "status": "new", "state": "succeeded"}
    assert getattr(fw_django.webhook_view, "csrf_exempt", False) is True
    assert len(signals.outcomes) == 1


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_only_post_is_allowed(configured: Any, method: str) -> None:
    """GET, PUT and DELETE are answered 405 naming POST."""
    answer = getattr(Client(), method)(WEBHOOK)
    assert answer.status_code == 405
    assert answer["Allow"] == "POST"


@pytest.mark.parametrize(("tamper", "status", "reason"), TAMPERINGS)
def test_forged_and_broken_deliveries_are_refused_and_record_nothing(
    configured: Any, fal: FakeFal, signals: Signals, tamper: str, status: int, reason: str
) -> None:
    """Each tampering is answered 400/401 with a JSON reason; the journal does not move and nothing is signalled."""
    request_id = _client().submit(SCHNELL, {"prompt": "a cat"}).request_id
    body, headers = tampered(tamper, fal, request_id)
    answer = _post(body, headers)
    assert answer.status_code == status
    assert answer["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == reason
    assert answer.json()["error"]["message"]
    entry = _client().ledger.journal.find(request_id)
    assert entry is not None
    assert entry.state is JobState.RUNNING
    assert _client().stats()["total_calls"] == 0
    assert signals.outcomes == []


def test_a_delivery_larger_than_djangos_upload_limit_is_still_settled(
    configured: Any, fal: FakeFal, signals: Signals, settings: Any
) -> None:
    """A 3 MB delivery (a data: URI output) passes Django's 2.5 MB DATA_UPLOAD_MAX_MEMORY_SIZE and settles the job."""
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2_621_440
    handle = _client().submit(SCHNELL, {"prompt": "a cat", "sync_mode": True})
    image = "data:image/png;base64," + "A" * 3_000_000
    body = json.dumps(
        {"request_id": handle.request_id, "gateway_request_id": handle.request_id, "status": "OK",
         "payload": {"images": [{"url": image, "width": 512, "height": 512}]}, "error": None, "payload_error": None}
    ).encode()  # fmt: skip
    answer = _post(body, fal.webhooks.sign(body, handle.request_id))
    assert answer.status_code == 200, answer.content[:200]
    assert answer.json()["status"] == "new"
    entry = _client().ledger.journal.find(handle.request_id)
    assert entry is not None
    assert entry.result is not None
    assert entry.result["images"][0]["url"] == image
    assert len(signals.outcomes) == 1


def test_a_replayed_delivery_is_a_duplicate_and_signals_nothing_more(
    configured: Any, fal: FakeFal, signals: Signals
) -> None:
    """A valid delivery sent again answers 200 duplicate: still one record and one signal."""
    body, headers, request_id = _genuine(fal)
    first = _post(body, headers)
    again = _post(body, headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["status"], again.json()["status"]) == ("new", "duplicate")
    assert _client().stats()["total_calls"] == 1
    assert [o.request_id for o in signals.outcomes] == [request_id]
    assert signals.outcomes[0].state is JobState.SUCCEEDED


def test_a_delivery_for_a_job_this_store_never_saw_is_acknowledged_without_a_signal(
    configured: Any, fal: FakeFal, signals: Signals
) -> None:
    """A genuine delivery for an unknown request id is 200 unknown (fal stops retrying) and signals nothing."""
    body = json.dumps({"request_id": "elsewhere", "gateway_request_id": None, "status": "OK", "payload": {},
                       "error": None, "payload_error": None}).encode()  # fmt: skip
    answer = _post(body, fal.webhooks.sign(body, "elsewhere"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "unknown"
    assert signals.outcomes == []
