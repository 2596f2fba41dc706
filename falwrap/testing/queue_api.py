"""fal's queue API as the emulator answers it: submit, status, status stream, result and cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from falwrap.testing.hosts import Route
from falwrap.testing.jobs import Job, logs_of, next_log_at
from falwrap.testing.messages import EventStream, Request, Response, json_response
from falwrap.testing.options import OptionError, RequestOptions, read_options
from falwrap.testing.webhooks import webhook_url_problem

if TYPE_CHECKING:
    from falwrap.testing.api import FalApi
    from falwrap.testing.models import FakeModel

__all__ = ["KEEPALIVE_S", "SSE_HEADERS", "final_answer", "handlers", "prepare"]

#: Status streams send a comment at least this often; the JS client gives up after 15 s of silence.
KEEPALIVE_S = 5.0

#: Headers of every server-sent event stream.
SSE_HEADERS = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))

_TRUTHY = {"1", "true", "True", "yes"}
_NOT_FOUND = {"detail": "Request not found"}


def prepare(api: FalApi, route: Route, request: Request) -> tuple[FakeModel, dict[str, Any], RequestOptions] | Response:
    """Check a model request (submit or run): the endpoint, the JSON body and the platform headers.

    Args:
        api: the emulator.
        route: the classified request (``app`` is the endpoint id).
        request: the request.

    Returns:
        ``(model, arguments, options)``, or the error answer fal gives.
    """
    model = api.model_for(route.app)
    if model is None:
        alias = route.app.split("/")[1]
        return json_response(404, {"detail": f"Application '{alias}' not found"})
    try:
        options = read_options(request.headers)
    except OptionError as exc:
        return json_response(400, {"detail": str(exc)})
    try:
        arguments = request.json()
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        detail = [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
        return json_response(422, {"detail": detail})
    return model, arguments, options


def _urls(api: FalApi, app: str, request_id: str) -> dict[str, str]:
    base = f"{api.base_url()}/{app}/requests/{request_id}"
    return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}


def _enqueue(api: FalApi, route: Route, request: Request) -> tuple[Job, int] | Response:
    prepared = prepare(api, route, request)
    if isinstance(prepared, Response):
        return prepared
    model, arguments, options = prepared
    webhook_url = request.param("fal_webhook")
    problem = webhook_url_problem(webhook_url) if webhook_url is not None else None
    if problem is not None:
        detail = [{"loc": ["query", "fal_webhook"], "msg": problem, "type": "value_error"}]
        return json_response(422, {"detail": detail})
    max_queue = _int_or_none(request.param("fal_max_queue_length"))
    job = api.new_job(model, route.app, arguments, options, webhook_url=webhook_url)
    position = api.board.submit(job, max_queue)
    if position is None:
        return json_response(429, {"detail": f"Queue is full (fal_max_queue_length={max_queue})"})
    return job, position


def _submit(api: FalApi, route: Route, request: Request) -> Response:
    queued = _enqueue(api, route, request)
    if isinstance(queued, Response):
        return queued
    job, position = queued
    payload = {
        "status": "IN_QUEUE",
        "request_id": job.request_id,
        **_urls(api, job.model.app, job.request_id),
        "queue_position": position,
        "gateway_request_id": job.gateway_request_id,
    }
    return json_response(200, payload, [("x-fal-request-id", job.request_id)])


def _submit_stream(api: FalApi, route: Route, request: Request) -> Response | EventStream:
    model = api.model_for(route.app)
    if model is None or not model.streams:
        return json_response(404, {"detail": "Not Found"})
    queued = _enqueue(api, route, request)
    if isinstance(queued, Response):
        return queued
    return api.stream_output(queued[0])


def _lookup(api: FalApi, route: Route) -> Job | None:
    job = api.board.get(route.request_id)
    if job is None or job.sync or not (job.endpoint_id == route.app or job.endpoint_id.startswith(route.app + "/")):
        return None
    with api.board.cond:
        return None if job.expired(api.clock()) else job


def _status_payload(api: FalApi, job: Job, logs: list[dict[str, Any]] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "status": job.state,
        "request_id": job.request_id,
        **_urls(api, job.model.app, job.request_id),
    }
    if job.state == "IN_QUEUE":
        payload["queue_position"] = api.board.queue_position(job)
        return payload
    payload["logs"] = logs
    if job.state == "COMPLETED":
        started, completed = job.started_at, job.completed_at
        payload["metrics"] = {"inference_time": round(completed - started, 4)} if started and completed else {}
        error = job.error
        if error is not None:
            payload["error"] = error.message
            payload["error_type"] = error.error_type
    return payload


def _status(api: FalApi, route: Route, request: Request) -> Response:
    job = _lookup(api, route)
    if job is None:
        return json_response(404, _NOT_FOUND)
    with_logs = request.param("logs") in _TRUTHY
    with api.board.cond:
        now = api.clock()
        api.board.advance_locked(now)
        payload = _status_payload(api, job, logs_of(job, now, api.wall) if with_logs else None)
    status = 200 if payload["status"] == "COMPLETED" else 202
    return json_response(status, payload, [("x-fal-request-id", job.request_id)])


def _stream(api: FalApi, route: Route, request: Request) -> Response | EventStream:
    job = _lookup(api, route)
    if job is None:
        return json_response(404, _NOT_FOUND)
    with_logs = request.param("logs") in _TRUTHY
    headers = (*SSE_HEADERS, ("x-fal-request-id", job.request_id))
    return EventStream(lambda: _status_events(api, job, with_logs), headers)


def _status_events(api: FalApi, job: Job, with_logs: bool) -> Iterator[bytes]:
    board = api.board
    last_key: tuple[Any, ...] | None = None
    sent_logs = seen_attempt = 0
    last_sent = api.clock()
    while True:
        with board.cond:
            while True:
                if board.closed:
                    return
                now = api.clock()
                board.advance_locked(now)
                all_logs = logs_of(job, now, api.wall) if with_logs else []
                position = board.queue_position(job) if job.state == "IN_QUEUE" else None
                key = (job.state, position, len(all_logs), job.attempt)
                if key != last_key:
                    if job.attempt != seen_attempt:
                        # A retried job runs again on a new runner, whose log starts over.
                        sent_logs, seen_attempt = 0, job.attempt
                    # The JS client appends each event's logs, so send only new lines.
                    payload = _status_payload(api, job, all_logs[sent_logs:] if with_logs else None)
                    chunk = f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
                    last_key, sent_logs = key, len(all_logs)
                    break
                if now - last_sent >= KEEPALIVE_S:
                    chunk = b": keep-alive\n\n"
                    break
                deadlines = [
                    last_sent + KEEPALIVE_S,
                    board.next_event_at(),
                    next_log_at(job, now) if with_logs else None,
                ]
                board.cond.wait(max(0.001, min(d for d in deadlines if d is not None) - now))
        yield chunk
        last_sent = api.clock()
        if last_key[0] == "COMPLETED" and chunk.startswith(b"data:"):
            return


def final_answer(api: FalApi, job: Job) -> Response:
    """What fal answers for a completed job: its output, or its error; the caller holds the board's lock.

    Args:
        api: the emulator.
        job: a COMPLETED job.

    Returns:
        200 with the output and ``x-fal-billable-units``; the failure's status, body and
        headers (with ``x-fal-billable-units`` when fal billed it); 499 once cancelled.
    """
    headers = [("x-fal-request-id", job.request_id)]
    if job.billable_units is not None:
        headers.append(("x-fal-billable-units", str(job.billable_units)))
    if job.outcome == "cancelled":
        return json_response(499, {"detail": "Request cancelled by the client."}, headers)
    error = job.error
    if error is not None:
        return json_response(error.status, error.body(), headers + error.response_headers())
    return json_response(200, job.output, headers)


def _result(api: FalApi, route: Route, request: Request) -> Response:
    job = _lookup(api, route)
    if job is None:
        return json_response(404, _NOT_FOUND)
    with api.board.cond:
        api.board.advance_locked(api.clock())
        if job.state != "COMPLETED":
            return json_response(
                400, {"detail": "Request is still in progress"}, [("x-fal-request-id", job.request_id)]
            )
        return final_answer(api, job)


def _cancel(api: FalApi, route: Route, request: Request) -> Response:
    job = _lookup(api, route)
    if job is None:
        return json_response(404, {"status": "NOT_FOUND"})
    outcome = api.board.cancel(job.request_id)
    if outcome == "requested":
        return json_response(202, {"status": "CANCELLATION_REQUESTED"})
    if outcome == "completed":
        return json_response(400, {"status": "ALREADY_COMPLETED"})
    return json_response(404, {"status": "NOT_FOUND"})


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


#: action -> handler; every queue route needs the API key (checked by the caller).
handlers = {
    "submit": _submit,
    "submit_stream": _submit_stream,
    "status": _status,
    "stream": _stream,
    "result": _result,
    "cancel": _cancel,
}
