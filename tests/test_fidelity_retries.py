"""FakeFal's queue retries failed runners as fal's does: up to 10 times on 503/504/429/lost runners,
a new gateway request id each time, a fallback endpoint after five, switched off per request by
x-fal-no-retry and x-fal-disable-fallbacks; only the attempt that succeeds is billed."""

from __future__ import annotations

import json
from decimal import Decimal

from falwrap.testing import Behaviour, FakeFal, FakeModel, JobFailure
from tests.helpers.fal_http import DEV, raw, submit, wait_completed
from tests.helpers.webhook_receiver import running_receiver

FLAKY = FakeModel("acme/flaky", "image", "image", Decimal("0.1"), 0.02, fallback="acme/steady")
STEADY = FakeModel("acme/steady", "image", "image", Decimal("0.2"), 0.02)


def test_runner_failure_is_retried_on_a_new_runner_and_billed_once() -> None:
    """Two lost runners, then success: the caller sees one ok job, three attempts, three gateway ids, one bill."""
    with FakeFal(latency=0.05) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503, attempts=2))
        client = raw(fal)
        handle = submit(client)
        status = wait_completed(client, handle)
        assert status.get("error") is None
        assert client.get(handle["response_url"]).status_code == 200
        view = fal.jobs[handle["request_id"]]
        assert (view.outcome, view.attempts) == ("ok", 3)
        assert view.gateway_request_id not in (handle["request_id"], handle["gateway_request_id"])
        assert fal.server_retries == 2
        assert [record.request_id for record in fal.billing] == [handle["request_id"]]


def test_status_stream_follows_the_job_through_a_retry() -> None:
    """The status stream of a retried job shows each runner's log from its start, then COMPLETED once."""
    with FakeFal(concurrency=1, latency=0.3) as fal:
        client = raw(fal)
        blocker = submit(client)
        fal.fail_next_jobs(1, JobFailure("runner_connection_error", status=503, attempts=1))
        handle = submit(client)
        with client.stream("GET", handle["status_url"] + "/stream", params={"logs": 1}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        states = [event["status"] for event in events]
        assert states[0] == "IN_QUEUE" and states[-1] == "COMPLETED" and states.count("COMPLETED") == 1
        messages = [line["message"] for event in events for line in event.get("logs") or []]
        assert sum(message.startswith("Starting") for message in messages) == 2
        assert fal.jobs[handle["request_id"]].attempts == 2
        wait_completed(client, blocker)


def test_every_attempt_failing_ends_after_ten_retries() -> None:
    """A runner that always fails is tried 11 times; then the job fails with that error and nothing is billed."""
    with FakeFal(latency=0.01) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_scheduling_failure", status=503, retryable=True))
        client = raw(fal)
        handle = submit(client)
        status = wait_completed(client, handle)
        assert status["error_type"] == "runner_scheduling_failure"
        assert client.get(handle["response_url"]).status_code == 503
        assert fal.jobs[handle["request_id"]].attempts == 11
        assert fal.server_retries == 10 and fal.billing == []


def test_no_retry_header_fails_at_the_first_runner() -> None:
    """x-fal-no-retry: 1 turns the queue's retries off for that request."""
    with FakeFal(latency=0.02) as fal:
        fal.fail_next_jobs(1, JobFailure("request_timeout", status=504))
        client = raw(fal)
        handle = submit(client, headers={"x-fal-no-retry": "1"})
        assert wait_completed(client, handle)["error_type"] == "request_timeout"
        assert fal.jobs[handle["request_id"]].attempts == 1 and fal.server_retries == 0


def test_model_errors_and_500s_are_not_retried() -> None:
    """A 422, a 500 and a 502 are the model's own answer: one attempt each."""
    with FakeFal(latency=0.02) as fal:
        client = raw(fal)
        handles = []
        for failure in (
            JobFailure("content_policy_violation", status=422),
            JobFailure("internal_server_error", status=500),
            JobFailure("runner_incomplete_response", status=502),
        ):
            fal.fail_next_jobs(1, failure)
            handles.append(submit(client))
        for handle in handles:
            wait_completed(client, handle)
            assert fal.jobs[handle["request_id"]].attempts == 1
        assert fal.server_retries == 0


def test_server_retryable_overrides_fals_rule() -> None:
    """JobFailure(server_retryable=...) makes a 500 retried, or a 503 not."""
    with FakeFal(latency=0.02) as fal:
        client = raw(fal)
        fal.fail_next_jobs(1, JobFailure("internal_server_error", status=500, attempts=1, server_retryable=True))
        retried = submit(client)
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503, server_retryable=False))
        final = submit(client)
        assert wait_completed(client, retried).get("error") is None
        assert wait_completed(client, final)["error_type"] == "runner_disconnected"
        assert fal.jobs[final["request_id"]].attempts == 1


def test_fallback_endpoint_takes_over_after_five_retries() -> None:
    """After 1 + 5 failed runners the job moves to the model's fallback, succeeds there, billed at its own price."""
    with FakeFal(models={m.id: m for m in (FLAKY, STEADY)}) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503))
        client = raw(fal)
        handle = submit(client, FLAKY.id)
        assert wait_completed(client, handle).get("error") is None
        view = fal.jobs[handle["request_id"]]
        assert (view.attempts, view.served_by, view.model_id) == (7, STEADY.id, FLAKY.id)
        assert fal.fallbacks == 1 and fal.server_retries == 6
        (record,) = fal.billing
        assert (record.model_id, record.cost) == (FLAKY.id, Decimal("0.1"))


def test_disable_fallbacks_header_keeps_the_job_on_its_model() -> None:
    """x-fal-disable-fallbacks: true exhausts the retries on the model's own runners and fails."""
    with FakeFal(models={m.id: m for m in (FLAKY, STEADY)}) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503))
        client = raw(fal)
        handle = submit(client, FLAKY.id, headers={"x-fal-disable-fallbacks": "true"})
        assert wait_completed(client, handle)["error_type"] == "runner_disconnected"
        view = fal.jobs[handle["request_id"]]
        assert (view.attempts, view.served_by) == (11, FLAKY.id)
        assert fal.fallbacks == 0 and fal.billing == []


def test_server_retries_switch_off() -> None:
    """Behaviour(server_retries=0) fails the job at its first failed runner (the ideal, retry-free fal)."""
    with FakeFal(latency=0.02, behaviour=Behaviour(server_retries=0)) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503))
        client = raw(fal)
        handle = submit(client, DEV)
        assert wait_completed(client, handle)["error_type"] == "runner_disconnected"
        assert fal.jobs[handle["request_id"]].attempts == 1


def test_webhook_names_the_attempt_that_succeeded() -> None:
    """After server-side retries the webhook's gateway_request_id is the last attempt's, request_id the job's."""
    with running_receiver() as receiver, FakeFal(latency=0.02) as fal:
        fal.fail_next_jobs(1, JobFailure("runner_disconnected", status=503, attempts=1))
        client = raw(fal)
        handle = submit(client, DEV, params={"fal_webhook": receiver.url})
        (delivery,) = receiver.wait_for(1)
        body = json.loads(delivery.body)
        view = fal.jobs[handle["request_id"]]
        assert (body["request_id"], body["status"]) == (handle["request_id"], "OK")
        assert body["gateway_request_id"] == view.gateway_request_id != handle["request_id"]
