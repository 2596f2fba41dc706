"""fal's synchronous host as the emulator answers it: ``POST fal.run/{endpoint}`` returns the
model's output in its answer, ``POST .../stream`` streams it as server-sent events.

A sync call takes a free runner at once (no queue: over the concurrency limit
it gets 429) and is never retried by fal; it is billed like any job, whether
or not the caller is still there to read the answer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from falwrap.testing import queue_api
from falwrap.testing.hosts import Route
from falwrap.testing.jobs import Job
from falwrap.testing.media import jpeg_bytes
from falwrap.testing.messages import EventStream, Request, Response, json_response
from falwrap.testing.outputs import resolve_image_size
from falwrap.testing.queue_api import SSE_HEADERS, final_answer, prepare

if TYPE_CHECKING:
    from falwrap.testing.api import FalApi

__all__ = ["PARTIAL_FRACTIONS", "handlers", "output_stream"]

#: A streaming model sends a partial result when it is this far through its run.
PARTIAL_FRACTIONS = (0.25, 0.5, 0.75)

#: Longest side of the preview images in partial results.
_PREVIEW_SIDE = 64

_BUSY = {"detail": "Too many concurrent requests: every runner of the account is busy."}


def _event(payload: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _partial(job: Job, fraction: float) -> dict[str, Any]:
    if job.model.kind != "image":
        return {"progress": fraction}
    try:
        width, height = resolve_image_size(job.arguments.get("image_size"))
    except (ValueError, TypeError):
        return {"images": []}
    scale = _PREVIEW_SIDE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    preview = base64.b64encode(jpeg_bytes(*size)).decode("ascii")
    image = {
        "url": f"data:image/jpeg;base64,{preview}",
        "width": size[0],
        "height": size[1],
        "content_type": "image/jpeg",
    }
    return {"images": [image]}


def _output_events(api: FalApi, job: Job) -> Iterator[bytes]:
    board = api.board
    sent = 0
    last_sent = api.clock()
    while True:
        done = False
        with board.cond:
            while True:
                if board.closed:
                    return
                now = api.clock()
                board.advance_locked(now)
                if job.state == "COMPLETED":
                    error = job.error
                    chunk = _event(job.output) if error is None else _event(error.body(), "error")
                    done = True
                    break
                started = job.started_at if job.started_at is not None else now
                due = [started + f * job.latency_s for f in PARTIAL_FRACTIONS]
                reached = sum(1 for at in due if at <= now) if job.state == "IN_PROGRESS" else sent
                if reached > sent:
                    chunk, sent = _event(_partial(job, PARTIAL_FRACTIONS[reached - 1])), reached
                    break
                if now - last_sent >= queue_api.KEEPALIVE_S:
                    chunk = b": keep-alive\n\n"
                    break
                deadlines = [last_sent + queue_api.KEEPALIVE_S, board.next_event_at(), *due[sent:]]
                board.cond.wait(max(0.001, min(d for d in deadlines if d is not None) - now))
        yield chunk
        last_sent = api.clock()
        if done:
            return


def output_stream(api: FalApi, job: Job) -> Response | EventStream:
    """Answer a streaming request: the job's output as server-sent events, or its error.

    The answer starts once a runner that will not be retried has the job; a job
    that fails then gets its error as a plain answer, like a failed sync call.

    Args:
        api: the emulator.
        job: a registered job of a streaming model.

    Returns:
        An event stream of partial results ending with the full output, or an error response.
    """
    board = api.board
    if not board.wait_for(job, board.on_final_attempt):
        return json_response(503, {"detail": "Service is shutting down"})
    with board.cond:
        failing = job.state == "COMPLETED" or board.attempt_fails(job)
    if failing:
        if not board.wait_completed(job):
            return json_response(503, {"detail": "Service is shutting down"})
        with board.cond:
            return final_answer(api, job)
    headers = (*SSE_HEADERS, ("x-fal-request-id", job.request_id))
    return EventStream(lambda: _output_events(api, job), headers)


def _start(api: FalApi, route: Route, request: Request) -> Job | Response:
    prepared = prepare(api, route, request)
    if isinstance(prepared, Response):
        return prepared
    model, arguments, options = prepared
    job = api.new_job(model, route.app, arguments, options, sync=True)
    if not api.board.run_now(job):
        return json_response(429, _BUSY)
    return job


def _run(api: FalApi, route: Route, request: Request) -> Response:
    job = _start(api, route, request)
    if isinstance(job, Response):
        return job
    if not api.board.wait_completed(job):
        return json_response(503, {"detail": "Service is shutting down"})
    with api.board.cond:
        return final_answer(api, job)


def _run_stream(api: FalApi, route: Route, request: Request) -> Response | EventStream:
    model = api.model_for(route.app)
    if model is None or not model.streams:
        return json_response(404, {"detail": "Not Found"})
    job = _start(api, route, request)
    if isinstance(job, Response):
        return job
    return output_stream(api, job)


#: action -> handler; both need the API key (checked by the caller).
handlers = {"run": _run, "run_stream": _run_stream}
