"""fal's per-request platform headers, read and checked the way fal's gateway does."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = ["MIN_START_TIMEOUT_S", "OptionError", "RequestOptions", "parse_lifecycle", "read_options"]

Priority = Literal["normal", "low"]

#: Smallest ``X-Fal-Request-Timeout`` fal accepts, in seconds.
MIN_START_TIMEOUT_S = 1.0

_TRUE = frozenset({"1", "true", "yes"})


class OptionError(ValueError):
    """A platform header has a value fal refuses (answered with 400)."""


@attrs.frozen
class RequestOptions:
    """What a request's platform headers ask of fal.

    Attributes:
        start_timeout_s: ``X-Fal-Request-Timeout``: the longest the job may wait before a
            runner starts it, in seconds; None: no limit.
        priority: ``X-Fal-Queue-Priority``: ``"low"`` jobs start after every ``"normal"`` one.
        no_retry: ``X-Fal-No-Retry``: the queue does not retry failed runners.
        fallbacks: False when ``X-Fal-Disable-Fallbacks: true``.
        store_io: False when ``X-Fal-Store-IO: 0``: payloads are not stored.
        lifecycle_s: ``X-Fal-Object-Lifecycle-Preference``'s ``expiration_duration_seconds``:
            generated files are deleted after that many (fal) seconds; None: kept.
        runner_hint: ``X-Fal-Runner-Hint`` (accepted; one runner pool here).
    """

    start_timeout_s: float | None = None
    priority: Priority = "normal"
    no_retry: bool = False
    fallbacks: bool = True
    store_io: bool = True
    lifecycle_s: float | None = None
    runner_hint: str | None = None


def _start_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < MIN_START_TIMEOUT_S:
        msg = f"X-Fal-Request-Timeout must be a number of seconds >= {MIN_START_TIMEOUT_S:g}, got {value!r}"
        raise OptionError(msg)
    return seconds


def _priority(value: str | None) -> Priority:
    if value is None or value == "normal":
        return "normal"
    if value == "low":
        return "low"
    msg = f"X-Fal-Queue-Priority must be 'normal' or 'low', got {value!r}"
    raise OptionError(msg)


def parse_lifecycle(value: str | None) -> float | None:
    """Read an object lifecycle preference header.

    Args:
        value: the header, ``{"expiration_duration_seconds": N}`` (N may be null), or None.

    Returns:
        N in seconds, or None when files are kept.

    Raises:
        OptionError: when the value is not a JSON object or N is not a number >= 0.
    """
    if value is None:
        return None
    try:
        preference = json.loads(value)
    except ValueError:
        preference = None
    if not isinstance(preference, dict):
        msg = f"X-Fal-Object-Lifecycle-Preference must be a JSON object, got {value!r}"
        raise OptionError(msg)
    seconds = preference.get("expiration_duration_seconds")
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        msg = f"expiration_duration_seconds must be a number of seconds >= 0, got {seconds!r}"
        raise OptionError(msg)
    return float(seconds)


def read_options(headers: Mapping[str, str]) -> RequestOptions:
    """The platform options of one model request.

    Args:
        headers: the request's headers, names lower-cased.

    Returns:
        The options.

    Raises:
        OptionError: for a start timeout below 1 s or not a number, an unknown priority,
            or a lifecycle preference that is not a JSON object with a valid duration.
    """
    return RequestOptions(
        start_timeout_s=_start_timeout(headers.get("x-fal-request-timeout")),
        priority=_priority(headers.get("x-fal-queue-priority")),
        no_retry=headers.get("x-fal-no-retry", "").strip().lower() in _TRUE,
        fallbacks=headers.get("x-fal-disable-fallbacks", "").strip().lower() not in _TRUE,
        store_io=headers.get("x-fal-store-io", "1").strip() != "0",
        lifecycle_s=parse_lifecycle(headers.get("x-fal-object-lifecycle-preference")),
        runner_hint=headers.get("x-fal-runner-hint"),
    )
