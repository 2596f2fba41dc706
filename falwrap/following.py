"""Following an accepted job to its end: fal's status stream (SSE), else polling.

The stream costs one request per job and reports completion within
milliseconds; polling costs a request per interval. A host whose stream fails
before sending anything (a 404 from an older gateway, a proxy that buffers or
refuses event streams) is remembered for :data:`NO_STREAM_FOR` seconds, so the
jobs after it poll straight away instead of paying for a failed stream each.
A stream cut mid-job is resumed by polling the same request id.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import fal_client
import httpx

from falwrap.results import JobStatus, Progress
from falwrap.transport import DeadlineExceeded, ExchangeError, budget

if TYPE_CHECKING:
    from falwrap.job_types import JobSpec
    from falwrap.journal import Accepted

__all__ = [
    "MAX_POLL_INTERVAL",
    "NO_STREAM_FOR",
    "DeadlinePassed",
    "Follower",
    "JobStatusParseError",
    "from_fal_status",
    "parse_status",
]

logger = logging.getLogger("falwrap")

_T = TypeVar("_T")

#: Ceiling of the polling interval: slow jobs are polled less often, but a finished
#: job is noticed within this.
MAX_POLL_INTERVAL = 2.0

#: Seconds a host whose status stream failed is followed by polling only.
NO_STREAM_FOR = 600.0


class DeadlinePassed(Exception):
    """The deadline passed while following ``request_id`` (``None``: before fal accepted the job).

    Internal to the runner: the caller cancels the job and raises ``FalTimeoutError``.
    """

    def __init__(self, request_id: str | None) -> None:
        super().__init__(request_id)
        self.request_id = request_id


class JobStatusParseError(ValueError):
    """A status answer that is not one of fal's (no ``status`` field, unknown shape)."""


class _Exchange(Protocol):
    def __call__(
        self,
        phase: str,
        call: Callable[[], _T],
        *,
        endpoint: str | None,
        request_id: str | None,
        deadline: float,
        job_error_type: str | None = None,
    ) -> _T: ...


def parse_status(request_id: str, data: Mapping[str, Any]) -> JobStatus:
    """A status object of fal's (stream event or poll answer) as a :class:`JobStatus`.

    Raises:
        JobStatusParseError: it has no ``status``.
    """
    if "status" not in data:
        msg = f"no 'status' in {data!r}"
        raise JobStatusParseError(msg)
    metrics = data.get("metrics") or {}
    return JobStatus(
        request_id=request_id,
        status=str(data["status"]),
        queue_position=data.get("queue_position"),
        logs=tuple(data.get("logs") or ()),
        error=data.get("error"),
        error_type=data.get("error_type"),
        inference_time=metrics.get("inference_time") if isinstance(metrics, Mapping) else None,
    )


def from_fal_status(request_id: str, status: fal_client.Status) -> JobStatus:
    """fal_client's status object as a :class:`JobStatus`."""
    if isinstance(status, fal_client.Queued):
        return JobStatus(request_id, "IN_QUEUE", queue_position=status.position)
    if isinstance(status, fal_client.InProgress):
        return JobStatus(request_id, "IN_PROGRESS", logs=tuple(status.logs or ()))
    if isinstance(status, fal_client.Completed):
        metrics = status.metrics or {}
        return JobStatus(
            request_id,
            "COMPLETED",
            logs=tuple(status.logs or ()),
            error=status.error,
            error_type=status.error_type,
            inference_time=metrics.get("inference_time"),
        )
    msg = f"unknown status {status!r}"
    raise JobStatusParseError(msg)


class _Progress:
    """Turns statuses into :class:`Progress` events with only the log lines not seen before."""

    def __init__(self, accepted: Accepted, spec: JobSpec, clock: Callable[[], float]) -> None:
        self._accepted = accepted
        self._spec = spec
        self._clock = clock
        self._seen: set[tuple[Any, ...]] = set()

    def __call__(self, status: JobStatus) -> None:
        callback = self._spec.on_progress
        if callback is None:
            return
        new = []
        for line in status.logs:
            key = (line.get("timestamp"), line.get("message"), line.get("level"))
            if key not in self._seen:
                self._seen.add(key)
                new.append(line)
        callback(
            Progress(
                request_id=self._accepted.request_id,
                status=status.status,
                queue_position=status.queue_position,
                new_logs=new,
                elapsed_s=self._clock() - self._spec.started,
                model_id=self._spec.endpoint,
            )
        )


class Follower:
    """Follows jobs for one client. Thread-safe.

    Args:
        http: The HTTP client.
        exchange: The runner's retrying exchange (for polls).
        poll_interval: First polling interval, seconds.
        stream: Use the status stream where the host offers it.
        clock: Monotonic seconds.
        sleep: Sleeps a polling interval.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        exchange: _Exchange,
        poll_interval: float,
        stream: bool,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._http = http
        self._exchange = exchange
        self._poll_interval = poll_interval
        self._stream = stream
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._no_stream_until: dict[str, float] = {}

    def follow(self, accepted: Accepted, spec: JobSpec) -> JobStatus:
        """Follow the job until it completes and return its final status.

        Raises:
            DeadlinePassed: the deadline passed first (the caller cancels the job).
            FalApiError: polling failed after retries.
        """
        emit = _Progress(accepted, spec, self._clock)
        # Logs are only worth their bytes (and, on the stream, their extra events) to a listener.
        logs = spec.on_progress is not None
        if self._stream_allowed(accepted.status_url):
            final = self._follow_stream(accepted, spec, emit, logs)
            if final is not None:
                return final
        return self._follow_polling(accepted, spec, emit, logs)

    def _host(self, url: str) -> str:
        return httpx.URL(url).host

    def _stream_allowed(self, status_url: str) -> bool:
        if not self._stream:
            return False
        if not self._no_stream_until:
            # The usual case, read without the lock (a dict's length is read atomically):
            # no host has failed, so no URL needs parsing.
            return True
        host = self._host(status_url)
        with self._lock:
            until = self._no_stream_until.get(host)
            if until is None:
                return True
            if self._clock() >= until:
                del self._no_stream_until[host]
                return True
            return False

    def _give_up_stream(self, status_url: str, why: object) -> None:
        host = self._host(status_url)
        logger.info("[falwrap] status stream unavailable on %s (%s); polling for %g s", host, why, NO_STREAM_FOR)
        with self._lock:
            self._no_stream_until[host] = self._clock() + NO_STREAM_FOR

    def _follow_stream(
        self, accepted: Accepted, spec: JobSpec, emit: Callable[[JobStatus], None], logs: bool
    ) -> JobStatus | None:
        """Follow the job on the status stream; ``None`` means: poll instead."""
        # The query is written out: fal's status URLs carry none, and merging params costs a URL parse.
        request = self._http.build_request(
            "GET",
            f"{accepted.status_url}/stream?logs={'1' if logs else '0'}",
            extensions={"falwrap_stream": True},
        )
        events_seen = 0
        try:
            with budget(spec.deadline, None, self._clock):
                response = self._http.send(request, stream=True)
                try:
                    if response.headers.get("content-type", "").partition(";")[0].strip() != "text/event-stream":
                        raise _NotAnEventStream(response.headers.get("content-type"))
                    events = _event_data(response.iter_bytes())
                    for data in events:
                        if not data:
                            continue
                        status = parse_status(accepted.request_id, json.loads(data))
                        events_seen += 1
                        emit(status)
                        if status.done:
                            _drain(events, accepted.request_id)
                            return status
                finally:
                    response.close()
        except DeadlineExceeded:
            raise DeadlinePassed(accepted.request_id) from None
        except ExchangeError as exc:
            if self._clock() >= spec.deadline:
                raise DeadlinePassed(accepted.request_id) from None
            if exc.response is not None and exc.response.status_code < 500 and events_seen == 0:
                self._give_up_stream(accepted.status_url, f"HTTP {exc.response.status_code}")
            else:
                logger.debug("[falwrap] status stream for %s failed (%s); polling", accepted.request_id, exc)
        except _NotAnEventStream as exc:
            # A proxy answered something else: not worth retrying soon.
            self._give_up_stream(accepted.status_url, f"Content-Type {exc}")
        except (ValueError, KeyError, httpx.HTTPError) as exc:
            logger.debug("[falwrap] status stream for %s broke (%r); polling", accepted.request_id, exc)
        if self._clock() >= spec.deadline:
            raise DeadlinePassed(accepted.request_id)
        return None

    def _follow_polling(
        self, accepted: Accepted, spec: JobSpec, emit: Callable[[JobStatus], None], logs: bool
    ) -> JobStatus:
        since = self._clock()
        while True:
            status = self._exchange(
                "status", lambda: self.poll_once(accepted, logs=logs),
                endpoint=spec.endpoint, request_id=accepted.request_id, deadline=spec.deadline,
            )  # fmt: skip
            emit(status)
            if status.done:
                return status
            remaining = spec.deadline - self._clock()
            if remaining <= 0:
                raise DeadlinePassed(accepted.request_id)
            # Poll often at first, then about ten times over the job's age so far: a finished
            # job is noticed within ~10% of its run time, and long jobs cost few requests.
            age = self._clock() - since
            interval = min(max(self._poll_interval, age / 10), MAX_POLL_INTERVAL)
            self._sleep(min(interval, remaining))

    def poll_once(self, accepted: Accepted, *, logs: bool = True) -> JobStatus:
        """One status request through fal_client."""
        handle = fal_client.SyncRequestHandle(
            request_id=accepted.request_id,
            response_url=accepted.response_url,
            status_url=accepted.status_url,
            cancel_url=accepted.cancel_url,
            client=self._http,
        )
        return from_fal_status(accepted.request_id, handle.status(with_logs=logs))


def _drain(events: Iterator[Any], request_id: str) -> None:
    """Read a status stream to its end after COMPLETED, so its connection goes back to the pool.

    fal closes the stream right after COMPLETED; closing it first would throw the
    connection (and, against fal, its TLS session) away on every job. A failure
    here only costs that reuse, never the result.
    """
    try:
        for _ in events:
            pass
    except (httpx.HTTPError, ExchangeError) as exc:
        logger.debug("[falwrap] status stream for %s ended uncleanly (%r)", request_id, exc)


class _NotAnEventStream(Exception):
    """The status stream's answer is not ``text/event-stream`` (its Content-Type is the message)."""


def _event_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """The data of each event of a ``text/event-stream`` body, read as the WHATWG rules say.

    Only the ``data`` field means anything on fal's status stream; comments (fal's
    keep-alives) and other fields are skipped. Written here rather than taken from
    httpx-sse, because it runs on every job: parsing the bytes as they come costs a
    fraction of httpx-sse's way through httpx's text decoding and line splitting.
    """
    pending = b""
    data: list[bytes] = []
    opened = False
    for chunk in chunks:
        pending += chunk
        if not opened and len(pending) >= 3:
            opened = True
            pending = pending.removeprefix(b"\xef\xbb\xbf")  # a byte order mark may open the stream
        lines = pending.splitlines(keepends=True)
        # A last line without its LF waits for the rest (after a CR, the LF of a CRLF may follow).
        pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        yield from _dispatch(lines, data)
    if pending.endswith(b"\r"):
        yield from _dispatch([pending], data)


def _dispatch(lines: list[bytes], data: list[bytes]) -> Iterator[str]:
    """Take the fields of complete ``lines`` into ``data``; yield an event's data at each blank line."""
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data).decode("utf-8", "replace")
                data.clear()
        elif not line.startswith(b":"):
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
