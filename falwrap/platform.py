"""fal's platform API: the list of requests an endpoint received, to learn what became of a job.

``GET https://api.fal.ai/v1/models/requests/by-endpoint`` lists the requests fal
received for an endpoint, with their input and output payloads. falwrap asks it
in two places: when a submission's answer was lost (did fal accept it? under
which request id?) and in reconciliation, when a job's result is gone from the
queue (fal keeps results about an hour, six minutes when they are large).

Every exchange goes through the client's HTTP seam (routing, deadlines) and the
one retry loop; the API answers pages of at most 100 items.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import httpx

from falwrap import retry as _retry
from falwrap.errors import FalApiError, FalConnectionError, ServerError
from falwrap.responses import error_from_response
from falwrap.retry import RetryHook, RetryPolicy
from falwrap.transport import DeadlineExceeded, ExchangeError, budget

__all__ = ["PLATFORM_URL", "PlatformApi", "PlatformUnavailable", "RequestRecord", "canonical_json"]

#: fal's platform API (rerouted with every fal host when ``base_url`` is set).
PLATFORM_URL = "https://api.fal.ai/v1"

#: Pages read at most for one question: 20 pages of 100 requests covers any window falwrap asks about.
MAX_PAGES = 20


def canonical_json(value: Any) -> str:
    """One spelling of a JSON value, to compare a submitted input with what fal recorded."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class PlatformUnavailable(Exception):
    """fal's platform API could not answer (unreachable, unauthorised, malformed); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=timezone.utc)


@attrs.frozen
class RequestRecord:
    """One request as fal's platform API reports it.

    Args:
        request_id: fal's request id.
        endpoint_id: The endpoint it was sent to.
        sent_at, started_at, ended_at: When it arrived, started and ended (UTC), when known.
        status_code: The model's HTTP status (200 for a success), ``None`` while running.
        json_input: The input payload, when payloads were asked for.
        json_output: The output payload of a finished request.
    """

    request_id: str
    endpoint_id: str
    sent_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    status_code: int | None
    json_input: Any = attrs.field(default=None, repr=False)
    json_output: Any = attrs.field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        """True once fal recorded an end."""
        return self.ended_at is not None or self.status_code is not None

    @property
    def succeeded(self) -> bool:
        """True for a request that ended with a 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> RequestRecord:
        """Read one item of the API's ``items`` list.

        Raises:
            ValueError: the item has no request id.
        """
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            msg = f"platform item without a request_id: {item!r}"
            raise ValueError(msg)
        status = item.get("status_code")
        return cls(
            request_id=request_id,
            endpoint_id=str(item.get("endpoint_id") or ""),
            sent_at=_time(item.get("sent_at")),
            started_at=_time(item.get("started_at")),
            ended_at=_time(item.get("ended_at")),
            status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
            json_input=item.get("json_input"),
            json_output=item.get("json_output"),
        )


class PlatformApi:
    """Questions to fal's platform API about requests. Thread-safe (httpx clients are).

    Args:
        http: The client's HTTP client (its transport routes ``api.fal.ai``).
        policy: The retry policy for 5xx, 429 and connection failures.
        per_exchange: Longest single exchange, seconds.
        hooks: Retry hooks.
        clock: Monotonic clock of the deadlines given.
        sleep: Sleeps a backoff (default :func:`falwrap.retry.sleep`).
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        policy: RetryPolicy,
        per_exchange: float,
        hooks: tuple[RetryHook, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = _retry.sleep,
    ) -> None:
        self._http = http
        self._sleep = sleep
        self._policy = policy
        self._per_exchange = per_exchange
        self._hooks = hooks
        self._clock = clock

    def requests(
        self,
        endpoint_id: str,
        *,
        deadline: float,
        start: datetime | None = None,
        end: datetime | None = None,
        request_id: str | None = None,
        until: Callable[[RequestRecord], bool] | None = None,
    ) -> list[RequestRecord]:
        """The requests fal recorded for ``endpoint_id`` (with payloads), oldest first.

        Args:
            endpoint_id: The endpoint, e.g. ``fal-ai/flux/dev``.
            deadline: Monotonic time after which no exchange starts.
            start: Only requests sent at or after this time.
            end: Only requests sent before this time.
            request_id: Only this request.
            until: Stop reading pages once a request satisfies this (a busy endpoint can
                list thousands of requests in a minute: read no more than needed).

        Raises:
            PlatformUnavailable: fal could not answer (after retries), refused the key, or
                answered something unreadable.
        """
        params: dict[str, str] = {"endpoint_id": endpoint_id, "expand": "payloads", "limit": "100"}
        if start is not None:
            params["start"] = _iso(start)
        if end is not None:
            params["end"] = _iso(end)
        if request_id is not None:
            params["request_id"] = request_id
        found: list[RequestRecord] = []
        cursor: str | None = None
        for _page in range(MAX_PAGES):
            page = self._page({**params, **({"cursor": cursor} if cursor else {})}, deadline)
            items = page.get("items")
            if not isinstance(items, list):
                msg = "the answer has no 'items' list"
                raise PlatformUnavailable(msg)
            for item in items:
                if isinstance(item, Mapping):
                    try:
                        found.append(RequestRecord.from_json(item))
                    except ValueError:
                        continue
            if until is not None and any(until(record) for record in found):
                break
            cursor = page.get("next_cursor") if page.get("has_more") else None
            if not isinstance(cursor, str) or not cursor:
                break
        found.sort(key=lambda r: r.sent_at or datetime.min.replace(tzinfo=timezone.utc))
        return found

    def _page(self, params: Mapping[str, str], deadline: float) -> dict[str, Any]:
        url = f"{PLATFORM_URL}/models/requests/by-endpoint"

        def attempt() -> dict[str, Any]:
            with budget(deadline, self._per_exchange, self._clock):
                response = self._http.get(url, params=params)
            data = response.json()
            if not isinstance(data, dict):
                msg = f"expected a JSON object, got {type(data).__name__}"
                raise TypeError(msg)
            return data

        def classify(exc: BaseException, attempts: int) -> tuple[str, FalApiError] | None:
            if isinstance(exc, ExchangeError):
                if exc.response is not None:
                    response = exc.response
                    error = error_from_response(
                        response.status_code, dict(response.headers), response.content,
                        attempts=attempts, queue_phase=False,
                    )  # fmt: skip
                else:
                    msg = f"fal's platform API could not be reached ({type(exc.cause).__name__})."
                    error = FalConnectionError(msg, retryable=True, attempts=attempts)
                return "platform", error
            if isinstance(exc, (ValueError, TypeError)):
                msg = f"fal's platform API answered something unreadable ({exc!r})."
                return "platform", ServerError(msg, error_code="MALFORMED_RESPONSE", attempts=attempts)
            return None

        try:
            return _retry.retrying(
                attempt,
                policy=self._policy,
                classify=classify,
                deadline=deadline,
                hooks=self._hooks,
                clock=self._clock,
                pause=self._sleep,
            )
        except FalApiError as exc:
            raise PlatformUnavailable(str(exc)) from exc
        except DeadlineExceeded as exc:
            msg = "no time left to ask fal's platform API"
            raise PlatformUnavailable(msg) from exc
