"""Webhook endpoints: fal's deliveries verified, settled in the journal once, answered 200/400/401.

FakeFal signs and delivers as fal does; the Flask blueprint is served by a real
werkzeug server in a thread so deliveries arrive over real HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from falwrap import FalClient
from falwrap.contrib import flask as fw
from falwrap.journal import JobState
from falwrap.testing import FakeFal, Fault, WebhookFault
from tests.helpers.deliveries import TAMPERINGS, signed_delivery, tampered

MODEL = "fal-ai/flux/schnell"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(webhook_time_scale=0.0005) as emulator:
        yield emulator


class App:
    """A Flask app with the webhook blueprint, served on 127.0.0.1, counting the signals it gets."""

    def __init__(self, fal: FakeFal) -> None:
        self.flask = Flask("webhook-test")
        self.flask.config.update(
            FAL_KEY=fal.key, FAL_BASE_URL=fal.url, FALWRAP_WEBHOOK_JWKS_URL=fal.webhook_jwks_url,
            FAL_REQUESTS_PER_MINUTE="600000", FAL_RATE_BURST="100", FALWRAP_ENV_FILE=None,
        )  # fmt: skip
        self.ext = fw.FalWrap(self.flask)
        self.flask.register_blueprint(fw.webhook_blueprint)
        self.signals: list[Any] = []
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.flask, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/fal/webhook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def on_signal(self, sender: Any, outcome: Any, **_: Any) -> None:
        with self._lock:
            self.signals.append(outcome)

    @property
    def client(self) -> FalClient:
        client: FalClient = self.flask.extensions[fw.EXTENSION_KEY]
        return client


@pytest.fixture
def app(fal: FakeFal) -> Iterator[App]:
    served = App(fal)
    fw.job_finished.connect(served.on_signal)
    served._thread.start()
    try:
        yield served
    finally:
        fw.job_finished.disconnect(served.on_signal)
        served.server.shutdown()
        served.client.close()


def _post(app: App, body: bytes, headers: dict[str, str]) -> Any:
    return app.flask.test_client().post("/fal/webhook", data=body, headers=headers)


def test_a_delivery_settles_the_job_once_and_signals_once(fal: FakeFal, app: App) -> None:
    """Each job delivered twice and out of order: settled once, one signal, ledger equals fal's bill."""
    fal.inject_webhook(WebhookFault(copies=2, reorder_batch=4), times=8)
    handles = [app.client.submit(MODEL, {"prompt": f"cat {i}"}, webhook_url=app.url) for i in range(8)]
    assert fal.webhooks.wait_idle(30)
    journal = app.client.ledger.journal
    for handle in handles:
        entry = journal.find(handle.request_id)
        assert entry is not None
        assert entry.state is JobState.SUCCEEDED
        assert entry.result is not None
    assert fal.webhooks.deliveries >= 16
    assert sorted(o.request_id for o in app.signals) == sorted(h.request_id for h in handles)
    assert app.client.stats()["total_calls"] == 8
    assert app.client.daily_cost() == fal.billed_total == Decimal("0.024")
    # The result is in the journal now: no HTTP to the queue to read it.
    before = fal.counters.get("result", 0)
    assert app.client.result(handles[0])["images"]
    assert fal.counters.get("result", 0) == before


def test_a_failed_job_is_settled_failed(fal: FakeFal, app: App) -> None:
    """An ERROR delivery settles the job as failed and signals it."""
    from falwrap.testing import JobFailure

    fal.fail_next_jobs(1, JobFailure("content_policy_violation", status=422, retryable=False))
    handle = app.client.submit(MODEL, {"prompt": "forbidden"}, webhook_url=app.url)
    assert fal.webhooks.wait_idle(30)
    entry = app.client.ledger.journal.find(handle.request_id)
    assert entry is not None
    assert entry.state is JobState.FAILED
    assert entry.error_code == "content_policy_violation"
    assert [o.state for o in app.signals] == [JobState.FAILED]


def _genuine(fal: FakeFal, app: App) -> tuple[bytes, dict[str, str], str]:
    handle = app.client.submit(MODEL, {"prompt": "a cat"})
    body, headers = signed_delivery(fal, handle.request_id)
    return body, headers, handle.request_id


@pytest.mark.parametrize(("tamper", "status", "reason"), TAMPERINGS)
def test_forged_and_broken_deliveries_are_refused_and_record_nothing(
    fal: FakeFal, app: App, tamper: str, status: int, reason: str
) -> None:
    """Each tampering is answered 400/401 with its reason, and the journal does not move."""
    request_id = app.client.submit(MODEL, {"prompt": "a cat"}).request_id
    body, headers = tampered(tamper, fal, request_id)
    answer = _post(app, body, headers)
    assert answer.status_code == status
    assert answer.get_json()["error"]["code"] == reason
    entry = app.client.ledger.journal.find(request_id)
    assert entry is not None
    assert entry.state is JobState.RUNNING
    assert app.client.stats()["total_calls"] == 0
    assert app.signals == []


def test_a_replayed_delivery_is_a_no_op(fal: FakeFal, app: App) -> None:
    """A valid delivery sent again for a settled job answers 200 duplicate; still one record, one signal."""
    body, headers, request_id = _genuine(fal, app)
    first = _post(app, body, headers)
    again = _post(app, body, headers)
    assert first.status_code == again.status_code == 200
    assert first.get_json()["status"] == "new"
    assert again.get_json()["status"] == "duplicate"
    assert app.client.stats()["total_calls"] == 1
    assert len(app.signals) == 1
    assert app.client.ledger.journal.find(request_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]


def test_a_delivery_for_an_unknown_job_is_acknowledged(fal: FakeFal, app: App) -> None:
    """A genuine delivery for a job this store never journaled is 200 unknown (fal must stop retrying)."""
    body = json.dumps({"request_id": "elsewhere", "gateway_request_id": None, "status": "OK", "payload": {},
                       "error": None, "payload_error": None}).encode()  # fmt: skip
    answer = _post(app, body, fal.webhooks.sign(body, "elsewhere"))
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "unknown"


def test_a_delivery_that_overtakes_its_submission_is_retried_until_the_job_is_journaled(fal: FakeFal, app: App) -> None:
    """fal's answer to the submit stalls while the job runs and is delivered: 503 pending, then new.

    The delivery names a request id nobody has journaled yet, but a job with a webhook is
    being submitted, so the endpoint asks fal to deliver again instead of acknowledging a
    job it would then never settle; the retry after the answer is journaled settles it once.
    """
    fal.set_latency(0.05, MODEL)
    fal.inject("submit", Fault.after(Fault.stall(0.8, then="respond")))
    handle = app.client.submit(MODEL, {"prompt": "a quick cat"}, webhook_url=app.url)
    assert fal.webhooks.wait_idle(10.0)
    attempts = [a for a in fal.webhooks.attempts if a.request_id == handle.request_id]
    answers = [a.status_code for a in attempts]
    assert 503 in answers, answers
    assert answers[-1] == 200 and answers.count(200) == 1, answers
    assert answers.index(503) < answers.index(200)
    entry = app.client.ledger.journal.find(handle.request_id)
    assert entry is not None and entry.state is JobState.SUCCEEDED
    assert [o.request_id for o in app.signals] == [handle.request_id]
    assert app.client.daily_cost() == fal.billed_total > 0


def test_get_is_not_allowed(app: App) -> None:
    """The endpoint answers POST only."""
    assert app.flask.test_client().get("/fal/webhook").status_code == 405
