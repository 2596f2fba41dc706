"""Backup-host failover in FalTransport: a request that cannot connect to queue.fal.run or fal.run goes once
to queue.falrun.com or falrun.com, within the same budget; anything that may have been sent is not resent.

The inner transport below is the only stand-in: it plays a network on which the primary host refuses
connections, and forwards everything else to FakeFal over real HTTP. falwrap's transport, runner and
fal_client run unchanged on top of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from falwrap.client import _RoutedSyncClient
from falwrap.job_types import JobSpec, queue_urls
from falwrap.jobs import JobRunner
from falwrap.journal import Accepted
from falwrap.retry import RetryPolicy
from falwrap.testing import FakeFal, Fault
from falwrap.transport import (
    FORWARDED_HOST,
    PRIMARY_CONNECT_TIMEOUT,
    DeadlineExceeded,
    ExchangeError,
    FalTransport,
    PinnedBudget,
    budget,
    current_budget,
    transport_of,
)
from tests.helpers.fal_http import DEV, raw, submit, wait_completed


class Network(httpx.BaseTransport):
    """Requests meant for a ``down`` host fail with ``error`` (ConnectError: nothing was sent); the rest reach FakeFal.

    The host a request is meant for is its ``X-Forwarded-Host`` (FalTransport under ``base_url``) or its URL's host.
    """

    def __init__(self, down: set[str], error: type[httpx.TransportError] = httpx.ConnectError) -> None:
        self.down = down
        self.error = error
        self.seen: list[tuple[str, str]] = []
        self.connect_timeouts: dict[str, float | None] = {}
        self._real = httpx.HTTPTransport()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.headers.get(FORWARDED_HOST, request.url.host)
        with self._lock:
            self.seen.append((host, request.url.path))
            self.connect_timeouts[host] = request.extensions.get("timeout", {}).get("connect")
        if host in self.down:
            raise self.error(f"cannot reach {host}", request=request)
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()


class _Listener:
    """The runner's submit listener: remembers what it was told."""

    def __init__(self) -> None:
        self.accepted_ids: list[str] = []

    def accepted(self, accepted: Accepted) -> None:
        self.accepted_ids.append(accepted.request_id)

    def ambiguous(self) -> None:
        raise AssertionError("a submission that could not connect is not ambiguous")

    def known(self, request_id: str) -> bool:
        return False


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency=0.02) as server:
        yield server


def _http(fal: FakeFal, network: Network) -> httpx.Client:
    return httpx.Client(
        transport=FalTransport(fal.url, network),
        headers={"Authorization": f"Key {fal.key}"},
        timeout=httpx.Timeout(30.0, connect=10.0),
    )


def _runner(fal: FakeFal, http: httpx.Client) -> JobRunner:
    return JobRunner(_RoutedSyncClient(fal.key, http), http, policy=RetryPolicy(), per_exchange=10, poll_interval=0.02)


def test_a_job_submitted_through_the_backup_queue_host_runs_to_its_output(
    fal: FakeFal, caplog: pytest.LogCaptureFixture
) -> None:
    """queue.fal.run refusing connections: the submit goes to queue.falrun.com once, and the job completes."""
    network = Network(down={"queue.fal.run"})
    with _http(fal, network) as http:
        runner = _runner(fal, http)
        now = runner.clock()
        spec = JobSpec(endpoint=DEV, arguments={"prompt": "a cat"}, deadline=now + 60, timeout=60, started=now)
        listener = _Listener()
        with caplog.at_level(logging.WARNING, logger="falwrap"):
            accepted = runner.submit(spec, listener)
        output = runner.complete(accepted, spec)
    assert network.seen[:2] == [("queue.fal.run", f"/{DEV}"), ("queue.falrun.com", f"/{DEV}")]
    assert fal.counters["submit"] == 1
    assert fal.submissions == 1
    assert listener.accepted_ids == [accepted.request_id] == [output.request_id]
    assert output.data["images"]
    assert "queue.fal.run" in caplog.text and "queue.falrun.com" in caplog.text


def test_a_job_is_followed_by_request_id_on_the_backup_host(fal: FakeFal) -> None:
    """Status, result and cancel URLs built on queue.fal.run reach the same job through queue.falrun.com."""
    client = raw(fal)
    handle = submit(client, DEV, {"prompt": "a dog"})
    wait_completed(client, handle)
    network = Network(down={"queue.fal.run"})
    urls = queue_urls(DEV, handle["request_id"])
    with _http(fal, network) as http:
        runner = _runner(fal, http)
        status = runner.status(urls, DEV)
        output = runner.fetch(urls, DEV, runner.clock() + 30)
        cancelled = runner.cancel(urls, DEV)
    assert status.done
    assert output.request_id == handle["request_id"]
    assert output.data == client.get(handle["response_url"]).json()
    assert cancelled is False  # it had completed: fal answers the cancel of a finished job with 400
    backup_paths = [path for host, path in network.seen if host == "queue.falrun.com"]
    assert backup_paths == [
        f"/fal-ai/flux/requests/{handle['request_id']}/status",
        f"/fal-ai/flux/requests/{handle['request_id']}",
        f"/fal-ai/flux/requests/{handle['request_id']}/cancel",
    ]


def test_the_sync_host_fails_over_to_falrun_com(fal: FakeFal) -> None:
    """fal_client.run() on falwrap's client: fal.run refusing connections, falrun.com runs the model and answers."""
    network = Network(down={"fal.run"})
    with _http(fal, network) as http:
        output = _RoutedSyncClient(fal.key, http).run(DEV, {"prompt": "a cow"})
    assert output["images"]
    assert network.seen == [("fal.run", f"/{DEV}"), ("falrun.com", f"/{DEV}")]
    assert fal.counters["run"] == 1
    assert fal.counters["submit"] == 0


def test_when_the_backup_cannot_connect_either_the_primarys_error_stands(fal: FakeFal) -> None:
    """Both hosts down: one ExchangeError naming the primary's failure, marked not sent; nothing reached fal."""
    network = Network(down={"queue.fal.run", "queue.falrun.com"})
    with _http(fal, network) as http, pytest.raises(ExchangeError) as info:
        http.post(f"https://queue.fal.run/{DEV}", json={"prompt": "x"})
    error = info.value
    assert not error.sent
    assert isinstance(error.cause, httpx.ConnectError)
    assert "queue.fal.run" in str(error.cause)
    assert error.request.headers[FORWARDED_HOST] == "queue.fal.run"
    assert network.seen == [("queue.fal.run", f"/{DEV}"), ("queue.falrun.com", f"/{DEV}")]
    assert fal.counters["submit"] == 0


def test_hosts_without_a_backup_do_not_fail_over(fal: FakeFal) -> None:
    """rest.fal.ai has no backup domain: a connect failure there is the exchange's error at once."""
    network = Network(down={"rest.fal.ai"})
    with _http(fal, network) as http, pytest.raises(ExchangeError) as info:
        http.post("https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3", json={})
    assert not info.value.sent
    assert network.seen == [("rest.fal.ai", "/storage/auth/token")]
    assert network.connect_timeouts["rest.fal.ai"] == 10.0  # only hosts with a backup have theirs capped


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_a_request_that_may_have_been_sent_is_not_sent_again(fal: FakeFal, error: type[httpx.TransportError]) -> None:
    """A failure after connecting may mean fal got the submit: no failover, the error says it may have been sent."""
    network = Network(down={"queue.fal.run"}, error=error)
    with _http(fal, network) as http, pytest.raises(ExchangeError) as info:
        http.post(f"https://queue.fal.run/{DEV}", json={"prompt": "x"})
    assert info.value.sent
    assert network.seen == [("queue.fal.run", f"/{DEV}")]


def test_an_error_answer_from_the_primary_is_not_failed_over(fal: FakeFal) -> None:
    """A host that answers, even with a 503, is reachable: its answer is the exchange's, the backup is not asked."""
    fal.inject("submit", Fault.http(503))
    network = Network(down=set())
    with _http(fal, network) as http, pytest.raises(ExchangeError) as info:
        http.post(f"https://queue.fal.run/{DEV}", json={"prompt": "x"})
    assert info.value.response is not None and info.value.response.status_code == 503
    assert network.seen == [("queue.fal.run", f"/{DEV}")]


def test_the_primarys_connect_timeout_is_capped_and_the_backup_gets_the_rest(fal: FakeFal) -> None:
    """The primary waits at most PRIMARY_CONNECT_TIMEOUT to connect; the backup gets the client's own limit."""
    network = Network(down={"queue.fal.run"})
    with _http(fal, network) as http:
        http.post(f"https://queue.fal.run/{DEV}", json={"prompt": "x"})
    assert network.connect_timeouts == {"queue.fal.run": PRIMARY_CONNECT_TIMEOUT, "queue.falrun.com": 10.0}


def test_no_backup_attempt_once_the_deadline_has_passed(fal: FakeFal) -> None:
    """A primary that used up the budget leaves no time: DeadlineExceeded, and the backup is never tried."""
    now = [100.0]

    class SlowRefusal(Network):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            now[0] += 10.0  # the connect attempt took the rest of the budget
            return super().handle_request(request)

    network = SlowRefusal(down={"queue.fal.run"})
    with _http(fal, network) as http, budget(103.0, None, lambda: now[0]), pytest.raises(DeadlineExceeded):
        http.post(f"https://queue.fal.run/{DEV}", json={"prompt": "x"})
    assert network.seen == [("queue.fal.run", f"/{DEV}")]
    assert network.connect_timeouts["queue.fal.run"] == 3.0  # the 3 s left, below the cap and the client's 10 s


def test_without_base_url_the_request_goes_to_the_real_backup_host() -> None:
    """With no base_url the backup request is addressed to queue.falrun.com itself (answered here, not sent out)."""
    sent: list[tuple[str, str, str | None, bytes]] = []

    def offline(request: httpx.Request) -> httpx.Response:
        sent.append((str(request.url), request.headers["host"], request.headers.get(FORWARDED_HOST), request.read()))
        if request.url.host == "queue.fal.run":
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(200, json={"request_id": "r-1"})

    with httpx.Client(transport=FalTransport(None, httpx.MockTransport(offline))) as http:
        response = http.post(f"https://queue.fal.run/{DEV}", json={"prompt": "x"})
    body = b'{"prompt":"x"}'
    assert sent == [
        (f"https://queue.fal.run/{DEV}", "queue.fal.run", None, body),
        (f"https://queue.falrun.com/{DEV}", "queue.falrun.com", None, body),
    ]
    assert response.request.url.host == "queue.falrun.com"
    assert response.json() == {"request_id": "r-1"}


def test_a_pinned_budget_bounds_exchanges_from_any_thread(fal: FakeFal) -> None:
    """PinnedBudget (fal_client's part threads) applies its deadline where the caller's context is not set."""
    fal.inject("file", Fault.stall(30))
    results: list[Any] = []
    with httpx.Client(transport=FalTransport(fal.url, httpx.HTTPTransport())) as http:
        with budget(time.monotonic() + 1.0, None) as limits:
            view = httpx.Client(transport=PinnedBudget(transport_of(http), limits))

        def fetch() -> None:
            assert current_budget().deadline is None  # a fresh thread: no budget of its own
            started = time.monotonic()
            try:
                view.get(f"{fal.url}/files/anything.png")
            except ExchangeError as exc:
                results.append((exc.timed_out, time.monotonic() - started))

        worker = threading.Thread(target=fetch)
        worker.start()
        worker.join(30)
    assert len(results) == 1
    timed_out, took = results[0]
    assert timed_out
    assert took < 15  # bounded by the pinned 1 s deadline, not the 30 s stall
