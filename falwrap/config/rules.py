"""The limits every setting is held to, shared by the config classes and the environment table.

One place for each bound, so that ``Timeouts(image=...)`` and
``FAL_TIMEOUT_IMAGE=...`` accept exactly the same values and say so in the
unit the person used (seconds in code, milliseconds in the environment).
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

# Re-exported so that every bound a setting is held to can be found here.
from falwrap.money import MAX_USD

__all__ = [
    "DEFAULT_STORE_URL",
    "DEFAULT_WEBHOOK_JWKS_URL",
    "MAX_BURST",
    "MAX_CONCURRENT",
    "MAX_DURATION_S",
    "MAX_IDEMPOTENCY_TTL_S",
    "MAX_OBJECT_LIFECYCLE_S",
    "MAX_POLL_INTERVAL_S",
    "MAX_REQUESTS_PER_MINUTE",
    "MAX_RETRIES",
    "MAX_USD",
    "MIN_REQUESTS_PER_MINUTE",
    "MIN_START_TIMEOUT_S",
    "QUEUE_PRIORITIES",
    "REDIS_SCHEMES",
    "STORE_SCHEMES",
    "http_url_problem",
    "is_finite_number",
    "is_whole_number",
    "redact_url",
    "store_url_problem",
    "text_problem",
]

#: The longest duration any setting may name: 24 h. A deadline longer than a
#: day is a typo (``1e13``), and larger numbers overflow the clocks and socket
#: timeouts underneath.
MAX_DURATION_S = 86_400.0

#: fal sees at most ``max_retries + 1`` submissions: more than 100 is a typo.
MAX_RETRIES = 100

#: Pacing slower than one request in 1000 minutes is a typo; 10^9 a minute is
#: "do not pace" (benchmarks use it), and past it the limiter's microsecond
#: arithmetic loses meaning.
MIN_REQUESTS_PER_MINUTE = 0.001
MAX_REQUESTS_PER_MINUTE = 1_000_000_000.0

#: Bursts and jobs in flight beyond 10^6 are typos: no account runs that many at once.
MAX_BURST = 1_000_000
MAX_CONCURRENT = 1_000_000

#: Polling less often than once a minute would leave finished jobs waiting.
MAX_POLL_INTERVAL_S = 60.0

#: Idempotency records are kept at most 30 days: far beyond fal's result
#: retention (an hour), long enough for any retry a person would make.
MAX_IDEMPOTENCY_TTL_S = 30 * 86_400.0

#: fal's start timeout (``X-Fal-Request-Timeout``) is whole seconds, at least 1.
MIN_START_TIMEOUT_S = 1.0

#: How long fal keeps generated files on its CDN may be asked up to ten years.
MAX_OBJECT_LIFECYCLE_S = 3650 * 86_400.0

#: ``X-Fal-Queue-Priority`` values.
QUEUE_PRIORITIES = ("normal", "low")

#: Where shared state may live (``FalConfig.store_url``).
STORE_SCHEMES = ("memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix")
#: The schemes ``FALWRAP_REDIS_URL`` (Redis for everything) accepts.
REDIS_SCHEMES = ("redis", "rediss", "unix")

#: The library's default store: state in this process only.
DEFAULT_STORE_URL = "memory:"

#: Where fal publishes the public keys that sign its webhook deliveries.
DEFAULT_WEBHOOK_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"

_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole_number(value: Any) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be a key or URL (whitespace, control characters, lone surrogates), or ``None``."""
    if _CONTROL_OR_SPACE.search(value):
        return "it contains spaces or control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    return None


def http_url_problem(value: Any) -> str | None:
    """Why ``value`` is not an absolute ``http://`` or ``https://`` URL with a host, or ``None``."""
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not text"
    problem = text_problem(value)
    if problem:
        return problem
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "it does not start with http:// or https:// and a host"
    return None


def store_url_problem(value: Any, schemes: tuple[str, ...] = STORE_SCHEMES) -> str | None:
    """Why ``value`` cannot name a shared-state store of one of ``schemes``, or ``None``.

    ``memory:`` takes nothing after the colon; ``sqlite:///`` needs an absolute
    path to a file; the network schemes need a host (``unix://`` a socket path).
    """
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not text"
    problem = text_problem(value)
    if problem:
        return problem
    scheme, colon, rest = value.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in schemes:
        return "its scheme is not one of " + ", ".join(f"{s}:" for s in schemes)
    if scheme == "memory":
        return None if rest == "" else "memory: takes nothing after the colon"
    if scheme == "sqlite":
        path = rest.removeprefix("//")
        if not rest.startswith("///") or len(path) < 2:
            return "sqlite needs an absolute path: sqlite:///absolute/path.db"
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "it is not a valid URL"
    if scheme == "unix":
        return None if parts.path.startswith("/") else "unix:// needs the absolute path of a socket"
    return None if parts.hostname else f"{scheme}:// needs a host"


def redact_url(value: str | None) -> str | None:
    """``value`` with any password and query replaced by ``***`` (for reprs and messages).

    Store and webhook URLs may carry credentials in either place
    (``redis://:pw@host``, ``postgresql://host/db?password=pw``, ``?token=...``).
    """
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        if parts.password is None and not parts.query:
            return value  # nothing to hide: shown exactly as written
        if parts.password is not None:
            user = f"{parts.username}:" if parts.username else ":"
            parts = parts._replace(netloc=f"{user}***@{parts.netloc.rpartition('@')[2]}")
        if parts.query:
            parts = parts._replace(query="***")
        return parts.geturl()
    except ValueError:
        return "<invalid url>"
