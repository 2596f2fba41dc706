"""The submit/poll pattern for web apps, and the names the web integrations share.

A request thread should not wait five minutes for a video. The pattern::

    POST /jobs            handle = client.submit(model, arguments, webhook_url=...)
                          -> 202 {"request_id": ..., "status": "IN_QUEUE", ...}
    POST /fal/webhook     fal delivers the outcome; the job is settled in the journal
    GET  /jobs/<id>       report = job_report(client, store, id)
                          -> 202 while queued or running, 200 with the result (or the job's error)

The browser (or a worker) polls the last URL. Handles stay on the server, in
the journal the client keeps (``store = job_store_for(client)``): a handle
holds the URLs the server will call *with the fal key*, so one supplied by a
client must never be trusted. Every worker sharing the ``FALWRAP_STORE_URL``
answers every poll, from the journal once the job is finished.

:func:`error_response` (from :mod:`falwrap.contrib.json_answers`) turns every
:class:`~falwrap.FalwrapError` into an HTTP status, headers and a JSON body.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from falwrap.contrib.job_stores import (
    DEFAULT_JOB_TTL,
    JobStore,
    JournalJobStore,
    MemoryJobStore,
    RedisJobStore,
    job_store_for,
)
from falwrap.contrib.json_answers import ErrorResponse, error_response, jsonable
from falwrap.errors import FalTimeoutError, InvalidInputError, ModelError
from falwrap.results import JobHandle

if TYPE_CHECKING:
    from falwrap.client import FalClient

__all__ = [
    "DEFAULT_JOB_TTL",
    "ErrorResponse",
    "JobStore",
    "JournalJobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "accepted_body",
    "error_response",
    "job_report",
    "job_store_for",
    "jsonable",
    "valid_request_id",
]

#: fal's request ids are UUIDs; anything else in a URL is refused before any lookup.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def valid_request_id(request_id: str) -> bool:
    """Whether ``request_id`` looks like one of fal's (refuse the rest before any lookup).

    Args:
        request_id: From the URL.

    Returns:
        ``True`` for 1-128 letters, digits, ``-`` and ``_``.
    """
    return bool(_REQUEST_ID.match(request_id))


def accepted_body(handle: JobHandle, status_path: str) -> dict[str, Any]:
    """The JSON body of a 202 answer to a submission.

    Args:
        handle: From ``client.submit``.
        status_path: The app's URL to poll (e.g. ``/jobs/<request_id>``).

    Returns:
        ``request_id``, ``model_id``, ``status`` (``IN_QUEUE``), ``submitted_at``,
        ``estimate_usd`` (string) and ``status_url``. The fal URLs stay on the server.
    """
    return {
        "request_id": handle.request_id,
        "model_id": handle.model_id,
        "status": "IN_QUEUE",
        "submitted_at": handle.submitted_at.isoformat(),
        "estimate_usd": str(handle.estimate_usd),
        "status_url": status_path,
    }


def job_report(
    client: FalClient,
    store: JobStore,
    request_id: str,
    *,
    result_timeout: float | None = None,
    ask_fal: bool = True,
) -> tuple[int, dict[str, Any]]:
    """Answer one poll of a submitted job: where it stands or, once done, its result.

    A job the store holds finished (settled by a webhook delivery, an earlier poll
    or reconciliation) is answered from the store, without HTTP. Otherwise fal is
    asked once for the status (a short exchange, never a wait for the job); a job
    fal reports finished has its result fetched and settled in the journal, once
    across every worker sharing the store.

    Args:
        client: The shared client.
        store: The app's job store (:func:`job_store_for`).
        request_id: From the URL.
        result_timeout: Deadline for fetching a finished job's result.
        ask_fal: ``False`` answers from the store alone: a job not finished there is
            ``PENDING``, and only a webhook delivery (or reconciliation) settles it.

    Returns:
        ``(status, body)``: 404 for an unknown id; 202 with ``status`` (fal's
        ``IN_QUEUE`` or ``IN_PROGRESS``, or ``PENDING``) and ``queue_position``
        while not finished; 200 with ``status`` ``COMPLETED`` and ``result`` (fal's
        output), or ``FAILED`` and ``error``.

    Raises:
        InvalidInputError: ``ask_fal`` is not a bool.
        FalwrapError: fal or the shared store could not be asked (map it with
            :func:`error_response`).
    """
    given: object = ask_fal  # "false" from a query string would be truthy
    if not isinstance(given, bool):
        msg = f"ask_fal: expected True or False, got {ask_fal!r}."
        raise InvalidInputError(msg, field="ask_fal")
    handle = store.load(request_id) if valid_request_id(request_id) else None
    if handle is None:
        error = {"type": "NotFound", "code": "UNKNOWN_JOB", "message": f"No job {request_id!r} is known here."}
        return 404, {"error": error}
    done = store.finished(request_id)
    if done is not None:
        return 200, done
    base = {"request_id": handle.request_id, "model_id": handle.model_id}
    if not ask_fal:
        return 202, {**base, "status": "PENDING", "queue_position": None}
    status = client.status(handle)
    if not status.done:
        return 202, {**base, "status": status.status, "queue_position": status.queue_position}
    try:
        output = client.result(handle, timeout=result_timeout)
        report = {**base, "status": "COMPLETED", "result": jsonable(output)}
    except (ModelError, FalTimeoutError) as exc:
        # The job itself failed (or was cancelled): that is its final state, not a failed poll.
        report = {**base, "status": "FAILED", "error": error_response(exc).body["error"]}
    store.finish(request_id, report)
    # What the store now holds is what every later poll reads: answer the same from the first.
    return 200, store.finished(request_id) or report
