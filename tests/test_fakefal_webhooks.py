"""FakeFal calls webhooks as fal does: signed deliveries on job end, fal's retry schedule, scripted faults."""

from __future__ import annotations

import base64
import itertools
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import fal_client
import httpx
import pytest
import requests

from falwrap.testing import FakeFal, JobFailure, RouteToFakeFal, WebhookFault
from falwrap.testing.webhooks import RETRY_DELAYS_S
from falwrap.webhooks import WebhookEvent, WebhookVerifier
from tests.helpers.webhook_receiver import Received, Receiver, running_receiver

DEV = "fal-ai/flux/dev"

#: fal's two-hour retry schedule runs in 3.6 s.
SCALE = 0.0005


@dataclass(frozen=True)
class Official(fal_client.SyncClient):
    """The official SyncClient; its httpx client talks to FakeFal."""

    target: str = ""

    @cached_property
    def _client(self) -> httpx.Client:
        return httpx.Client(
            transport=RouteToFakeFal(self.target), headers={"Authorization": f"Key {self.key}"}, timeout=10.0
        )


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=0.05, webhook_time_scale=SCALE) as emulator:
        yield emulator


@pytest.fixture
def client(fal: FakeFal) -> Official:
    return Official(key=fal.key, target=fal.url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


@pytest.fixture
def verifier(fal: FakeFal) -> Iterator[WebhookVerifier]:
    with requests.Session() as session:
        yield WebhookVerifier(fal.webhook_jwks_url, session=session)


def event_of(verifier: WebhookVerifier, received: Received) -> WebhookEvent:
    return verifier.verify(received.headers, received.body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- what is delivered ------------------------------------------------------------------------------


def test_finished_job_is_delivered_signed_without_anyone_polling(
    fal: FakeFal, client: Official, receiver: Receiver, verifier: WebhookVerifier
) -> None:
    """A job submitted with webhook_url by fal_client is POSTed to it when it ends; the delivery verifies."""
    handle = client.submit(DEV, {"prompt": "a lighthouse"}, webhook_url=receiver.url)
    [received] = receiver.wait_for(1)
    assert received.path == "/hook"
    assert received.header("Content-Type") == "application/json"
    event = event_of(verifier, received)
    assert (event.request_id, event.gateway_request_id, event.status) == (handle.request_id,) * 2 + ("OK",)
    assert (event.error, event.payload_error, event.user_id) == (None, None, fal.webhooks.user_id)
    assert abs(event.timestamp - time.time()) < 60
    assert event.payload == client.result(DEV, handle.request_id)
    assert fal.webhooks.wait_idle(10)
    [attempt] = fal.webhooks.attempts
    assert (attempt.request_id, attempt.attempt, attempt.copy, attempt.status_code) == (handle.request_id, 1, 1, 200)
    assert attempt.url == receiver.url
    assert fal.webhooks.deliveries == 1
    assert fal.jobs[handle.request_id].webhook_url == receiver.url


def test_failed_job_delivers_error_with_the_result_body(
    fal: FakeFal, client: Official, receiver: Receiver, verifier: WebhookVerifier
) -> None:
    """A job that fails is delivered as ERROR: fal's "Invalid status code" text and the result route's body."""
    fal.fail_next_jobs(1, JobFailure("content_policy_violation"))
    handle = client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    event = event_of(verifier, receiver.wait_for(1)[0])
    result = httpx.get(handle.response_url, headers={"Authorization": f"Key {fal.key}"})
    assert (event.ok, event.status, event.error) == (False, "ERROR", "Invalid status code: 422")
    assert event.payload == result.json()
    assert event.payload["detail"][0]["type"] == "content_policy_violation"


def test_cancelled_job_delivers_error_499(
    fal: FakeFal, client: Official, receiver: Receiver, verifier: WebhookVerifier
) -> None:
    """A job cancelled while running is delivered as ERROR 499 with the cancellation detail."""
    fal.set_latency(30)
    handle = client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    client.cancel(DEV, handle.request_id)
    event = event_of(verifier, receiver.wait_for(1)[0])
    assert (event.status, event.error) == ("ERROR", "Invalid status code: 499")
    assert event.payload == {"detail": "Request cancelled by the client."}


def test_jobs_without_webhook_send_nothing(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """Jobs submitted without webhook_url complete with no delivery at all."""
    client.subscribe(DEV, {"prompt": "x"}, client_timeout=10)
    assert fal.webhooks.wait_idle(5)
    assert (fal.webhooks.attempts, receiver.received) == ([], [])


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://10.0.0.1/hook", "ftp://127.0.0.1/hook", "hook"])
def test_webhook_off_the_machine_is_refused_at_submit(fal: FakeFal, url: str) -> None:
    """A fal_webhook that is not http(s) on a loopback address is refused with 422; no job is created."""
    response = httpx.post(
        f"{fal.url}/{DEV}",
        params={"fal_webhook": url},
        json={"prompt": "x"},
        headers={"Authorization": f"Key {fal.key}"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
    assert fal.submissions == 0


@pytest.mark.parametrize("host", ["localhost", "[::1]", "127.0.0.2"])
def test_loopback_webhooks_are_accepted(fal: FakeFal, host: str) -> None:
    """Loopback webhook URLs (localhost, ::1, all of 127/8) are accepted."""
    response = httpx.post(
        f"{fal.url}/{DEV}",
        params={"fal_webhook": f"http://{host}:{free_port()}/hook"},
        json={"prompt": "x"},
        headers={"Authorization": f"Key {fal.key}"},
    )
    assert response.status_code == 200


# -- retries ----------------------------------------------------------------------------------------


def test_failed_deliveries_are_retried_until_accepted(
    fal: FakeFal, client: Official, receiver: Receiver, verifier: WebhookVerifier
) -> None:
    """Answers 500, 503 then 200: three attempts on fal's schedule, each freshly signed and valid."""
    receiver.script(500, 503)
    handle = client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    received = receiver.wait_for(3)
    assert fal.webhooks.wait_idle(10)
    assert [event_of(verifier, r).request_id for r in received] == [handle.request_id] * 3
    attempts = fal.webhooks.attempts
    assert [(a.attempt, a.status_code, a.delivered) for a in attempts] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    gaps = [b.sent_at - a.sent_at for a, b in itertools.pairwise(attempts)]
    assert all(gap >= delay * SCALE for gap, delay in zip(gaps, RETRY_DELAYS_S[:2], strict=True))
    assert fal.webhooks.attempts_per_request() == {handle.request_id: 3}
    assert fal.webhooks.deliveries == 1


def test_unreachable_receiver_gets_ten_retries_over_the_scaled_two_hours(fal: FakeFal, client: Official) -> None:
    """A refused connection is retried 10 times, the last about 7200 s (scaled) after the first, then abandoned."""
    handle = client.submit(DEV, {"prompt": "x"}, webhook_url=f"http://127.0.0.1:{free_port()}/hook")
    assert fal.webhooks.wait_idle(60)
    attempts = fal.webhooks.attempts
    assert [a.attempt for a in attempts] == list(range(1, 12))
    assert all(a.status_code is None and a.error and a.request_id == handle.request_id for a in attempts)
    assert attempts[-1].sent_at - attempts[0].sent_at >= 7200 * SCALE
    assert fal.webhooks.deliveries == 0


def test_schedule_is_ten_doubling_waits_over_two_hours() -> None:
    """RETRY_DELAYS_S: 10 waits, each twice the last, adding up to 2 hours."""
    assert len(RETRY_DELAYS_S) == 10
    assert math.isclose(sum(RETRY_DELAYS_S), 7200)
    assert all(math.isclose(b, 2 * a) for a, b in itertools.pairwise(RETRY_DELAYS_S))


def test_redirects_are_not_followed(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """A 307 answer is a failed attempt (retried), and its Location is never called."""
    with running_receiver() as elsewhere:
        receiver.redirect_to = elsewhere.url
        receiver.script(307)
        client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
        receiver.wait_for(2)
        assert fal.webhooks.wait_idle(10)
        assert [a.status_code for a in fal.webhooks.attempts] == [307, 200]
        assert elsewhere.received == []


# -- scripted faults --------------------------------------------------------------------------------


def test_duplicate_sends_each_delivery_twice(
    fal: FakeFal, client: Official, receiver: Receiver, verifier: WebhookVerifier
) -> None:
    """WebhookFault.duplicate(): the receiver gets the same body twice, both genuine."""
    fal.inject_webhook(WebhookFault.duplicate(), times=1)
    handle = client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert event_of(verifier, first) == event_of(verifier, second)
    assert fal.webhooks.wait_idle(10)
    assert fal.webhooks.attempts_per_request() == {handle.request_id: 2}
    assert sorted(a.copy for a in fal.webhooks.attempts) == [1, 2]
    assert fal.webhooks.deliveries == 2


def test_drop_loses_the_delivery(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """WebhookFault.drop(): nothing is sent or retried; the next job is delivered normally."""
    fal.inject_webhook(WebhookFault.drop())
    lost = client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    assert fal.webhooks.wait_idle(10)
    kept = client.submit(DEV, {"prompt": "y"}, webhook_url=receiver.url)
    [received] = receiver.wait_for(1)
    assert fal.webhooks.wait_idle(10)
    assert json.loads(received.body)["request_id"] == kept.request_id
    assert fal.webhooks.dropped == [lost.request_id]
    assert fal.webhooks.attempts_per_request() == {kept.request_id: 1}


def test_delay_holds_the_delivery(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """WebhookFault.delay(0.4): the delivery arrives at least 0.4 s after the job ended."""
    fal.inject_webhook(WebhookFault.delay(0.4))
    handle = client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    [received] = receiver.wait_for(1)
    ended = fal.jobs[handle.request_id].completed_at
    assert ended is not None
    assert received.at - ended >= 0.4


def test_reorder_releases_a_batch_newest_first(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """WebhookFault.reorder(3): three jobs that end in order are delivered in reverse order."""
    fal.inject_webhook(WebhookFault.reorder(3), times=3)
    handles = []
    for index in range(3):
        handles.append(client.submit(DEV, {"prompt": str(index)}, webhook_url=receiver.url))
        time.sleep(0.01)  # distinct submit times, so distinct end times
    received = receiver.wait_for(3)
    ended = sorted(handles, key=lambda h: fal.jobs[h.request_id].completed_at or 0)
    assert [json.loads(r.body)["request_id"] for r in received] == [h.request_id for h in reversed(ended)]


def test_reorder_batch_not_full_is_held(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """A reorder batch that never fills holds its deliveries: wait_idle times out and nothing is sent."""
    fal.inject_webhook(WebhookFault.reorder(2))
    client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    assert not fal.webhooks.wait_idle(0.5)
    assert receiver.received == []


def test_faults_combine_and_are_consumed_in_order(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """Two copies each, in reversed pairs, for two jobs; the third job is delivered once."""
    fal.inject_webhook(WebhookFault(copies=2, reorder_batch=4), times=2)
    first = client.submit(DEV, {"prompt": "a"}, webhook_url=receiver.url)
    time.sleep(0.01)
    second = client.submit(DEV, {"prompt": "b"}, webhook_url=receiver.url)
    received = receiver.wait_for(4)
    assert [json.loads(r.body)["request_id"] for r in received] == [second.request_id] * 2 + [first.request_id] * 2
    third = client.submit(DEV, {"prompt": "c"}, webhook_url=receiver.url)
    assert fal.webhooks.wait_idle(10)
    assert Counter(fal.webhooks.attempts_per_request().values()) == Counter({2: 2, 1: 1})
    assert fal.webhooks.attempts_per_request()[third.request_id] == 1


def test_many_jobs_with_duplicates_all_arrive(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """Thirty jobs, each delivered twice by a concurrent pool: sixty genuine deliveries, two per job."""
    fal.inject_webhook(WebhookFault.duplicate(), times=30)
    handles = [client.submit(DEV, {"prompt": str(i)}, webhook_url=receiver.url) for i in range(30)]
    received = receiver.wait_for(60, timeout=30)
    counts = Counter(json.loads(r.body)["request_id"] for r in received)
    assert counts == Counter({h.request_id: 2 for h in handles})


def test_bad_faults_are_refused(fal: FakeFal) -> None:
    """Out-of-range webhook faults and injections raise ValueError or TypeError."""
    for build in (
        lambda: WebhookFault(copies=0),
        lambda: WebhookFault(copies=101),
        lambda: WebhookFault.delay(-1),
        lambda: WebhookFault.delay(math.nan),
        lambda: WebhookFault.reorder(1),
        lambda: fal.inject_webhook(WebhookFault(), times=0),
    ):
        with pytest.raises(ValueError):
            build()
    with pytest.raises(TypeError):
        fal.inject_webhook("drop")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        WebhookFault(copies=2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf])
def test_bad_time_scale_is_refused(scale: float) -> None:
    """webhook_time_scale must be a finite number above zero."""
    with pytest.raises(ValueError, match="webhook_time_scale"):
        FakeFal(webhook_time_scale=scale)
    with pytest.raises(TypeError, match="webhook_time_scale"):
        FakeFal(webhook_time_scale="1")  # type: ignore[arg-type]


# -- keys, counters, lifecycle ----------------------------------------------------------------------


def test_jwks_is_served_without_a_key_and_counted(fal: FakeFal) -> None:
    """/.well-known/jwks.json answers without Authorization: one OKP Ed25519 key with a 32-byte x."""
    response = httpx.get(fal.webhook_jwks_url)
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert (key["kty"], key["crv"], key["use"]) == ("OKP", "Ed25519", "sig")
    assert len(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))) == 32
    assert fal.counters["jwks"] == 1


def test_rotation_replaces_or_adds_the_published_key(fal: FakeFal) -> None:
    """rotate_webhook_key() publishes only the new key; keep_old=True publishes the new one first, then the old."""
    first = httpx.get(fal.webhook_jwks_url).json()["keys"]
    fal.rotate_webhook_key()
    second = httpx.get(fal.webhook_jwks_url).json()["keys"]
    fal.rotate_webhook_key(keep_old=True)
    third = httpx.get(fal.webhook_jwks_url).json()["keys"]
    assert len(second) == 1 and second[0]["x"] != first[0]["x"]
    assert [k["x"] for k in third][1:] == [second[0]["x"]] and third[0]["x"] not in {first[0]["x"], second[0]["x"]}


def test_two_emulators_do_not_share_keys(fal: FakeFal) -> None:
    """Each FakeFal generates its own key pair."""
    with FakeFal() as other:
        assert httpx.get(other.webhook_jwks_url).json() != httpx.get(fal.webhook_jwks_url).json()


def test_reset_counters_forgets_webhook_attempts(fal: FakeFal, client: Official, receiver: Receiver) -> None:
    """reset_counters() empties the attempt log, the drops and the delivery count."""
    fal.inject_webhook(WebhookFault.drop())
    client.submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
    client.submit(DEV, {"prompt": "y"}, webhook_url=receiver.url)
    receiver.wait_for(1)
    assert fal.webhooks.wait_idle(10)
    assert (fal.webhooks.deliveries, len(fal.webhooks.dropped)) == (1, 1)
    fal.reset_counters()
    assert (fal.webhooks.deliveries, fal.webhooks.dropped, fal.webhooks.attempts) == (0, [], [])


def test_stop_with_a_retry_pending_joins_every_thread() -> None:
    """stop() while a retry waits returns promptly and leaves no webhook thread behind."""
    with running_receiver(default=500) as failing:
        emulator = FakeFal(latency=0.01).start()
        Official(key=emulator.key, target=emulator.url).submit(DEV, {"prompt": "x"}, webhook_url=failing.url)
        failing.wait_for(1)
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("fakefal-webhook")]
    assert [a.attempt for a in emulator.webhooks.attempts] == [1]


def test_restart_resumes_pending_retries(receiver: Receiver) -> None:
    """A retry scheduled before stop() is sent after start() again."""
    receiver.script(500)
    emulator = FakeFal(latency=0.01, webhook_time_scale=0.2)  # the retry waits 1.4 s
    with emulator:
        Official(key=emulator.key, target=emulator.url).submit(DEV, {"prompt": "x"}, webhook_url=receiver.url)
        receiver.wait_for(1)
    restarted = time.monotonic()
    with emulator:
        receiver.wait_for(2)
        assert emulator.webhooks.wait_idle(10)
    first, second = emulator.webhooks.attempts
    assert [(first.attempt, first.status_code), (second.attempt, second.status_code)] == [(1, 500), (2, 200)]
    assert second.sent_at > restarted
