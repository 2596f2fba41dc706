"""Frozen, validated configuration, read from the environment and a ``.env`` file.

Every value is checked when the object is built, so a bad setting fails at
start-up with a message naming the setting, the bad value and what is
expected, instead of surfacing as a confusing error mid-request. Change a
setting with ``attrs.evolve(config, ...)``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import attrs

from falwrap.errors import ConfigurationError

__all__ = ["FalConfig", "RateLimitConfig", "RetryConfig", "Timeouts", "read_environment"]

_T = TypeVar("_T")


def _check(predicate: Callable[[Any], bool], expected: str) -> Callable[[Any, Any, Any], None]:
    """An attrs validator raising ConfigurationError (attrs' own raise plain ValueError)."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = False
        try:
            ok = bool(predicate(value))
        except (TypeError, ValueError, ArithmeticError):
            ok = False
        if not ok:
            name = f"{type(instance).__name__}.{attribute.name}"
            msg = f"{name}={value!r} is not valid: expected {expected}."
            raise ConfigurationError(msg, variable=attribute.name)

    return validate


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_positive_seconds = _check(lambda v: _finite(v) and v > 0, "a positive number of seconds")
_non_negative_seconds = _check(lambda v: _finite(v) and v >= 0, "zero or a positive number of seconds")


@attrs.frozen
class Timeouts:
    """Deadlines for whole operations, in seconds.

    A deadline bounds everything an operation does: waiting for the rate
    limiter, retries, the queue wait and the generation itself. Video picks its
    deadline by clip length: ``video_short`` for clips of 5 s or less,
    ``video_standard`` up to 10 s, ``video_long`` beyond.

    Args:
        image: Text-to-image and image-to-image calls.
        upscale: Upscaling calls.
        video_short: Videos of at most 5 seconds.
        video_standard: Videos of at most 10 seconds.
        video_long: Longer videos.
        model_list: Calls to fal's platform API (model list, prices).
        queue_status: One HTTP exchange with the queue (submit, status, result,
            cancel); a stalled exchange is abandoned and retried after this.
    """

    image: float = attrs.field(default=60.0, validator=_positive_seconds)
    upscale: float = attrs.field(default=90.0, validator=_positive_seconds)
    video_short: float = attrs.field(default=180.0, validator=_positive_seconds)
    video_standard: float = attrs.field(default=300.0, validator=_positive_seconds)
    video_long: float = attrs.field(default=600.0, validator=_positive_seconds)
    model_list: float = attrs.field(default=10.0, validator=_positive_seconds)
    queue_status: float = attrs.field(default=5.0, validator=_positive_seconds)

    def for_video(self, duration_s: float) -> float:
        """Return the deadline for a video of ``duration_s`` seconds."""
        if duration_s <= 5:
            return self.video_short
        if duration_s <= 10:
            return self.video_standard
        return self.video_long


@attrs.frozen
class RetryConfig:
    """How failed attempts are retried.

    The delay before retry ``n`` (0-based) is ``min(base_delay * 2**n, max_delay)``,
    jittered to between half and all of that when ``jitter`` is on; a
    ``Retry-After`` header from the server wins, capped by the time left before
    the deadline.

    Args:
        max_retries: Retries after the first attempt; fal sees at most
            ``max_retries + 1`` submissions for one call.
        base_delay: First backoff delay in seconds.
        max_delay: Ceiling of one backoff delay in seconds.
        jitter: Spread delays randomly so many clients do not retry in lockstep.
    """

    max_retries: int = attrs.field(
        default=3,
        validator=_check(
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100,
            "a whole number of retries from 0 to 100",
        ),
    )
    base_delay: float = attrs.field(default=1.0, validator=_non_negative_seconds)
    max_delay: float = attrs.field(default=8.0, validator=_non_negative_seconds)
    jitter: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.max_delay < self.base_delay:
            msg = (
                f"RetryConfig.max_delay={self.max_delay!r} is smaller than "
                f"base_delay={self.base_delay!r}: expected max_delay >= base_delay."
            )
            raise ConfigurationError(msg, variable="max_delay")


def _optional_positive_int(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


@attrs.frozen
class RateLimitConfig:
    """Client-side pacing of submissions and a cap on jobs in flight.

    Args:
        requests_per_minute: Submissions allowed per minute (a leaky bucket, GCRA).
        burst: Submissions that may go back to back before pacing starts.
        max_concurrent: Jobs in flight at once from this client (``None``: no cap).
        redis_url: When set, the limiter state lives in Redis so that every
            process and host sharing the key obeys one limit.
    """

    requests_per_minute: float = attrs.field(
        default=60.0, validator=_check(lambda v: _finite(v) and v > 0, "a positive number")
    )
    burst: int = attrs.field(
        default=1,
        validator=_check(
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "a whole number of at least 1",
        ),
    )
    max_concurrent: int | None = attrs.field(
        default=None, validator=_check(_optional_positive_int, "None or a whole number >= 1")
    )
    redis_url: str | None = attrs.field(
        default=None,
        validator=_check(
            lambda v: v is None or (isinstance(v, str) and v.startswith(("redis://", "rediss://", "unix://"))),
            "a redis://, rediss:// or unix:// URL",
        ),
        repr=lambda v: "None" if v is None else "'<redis url>'",
    )


def _normalise_base_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    return value.rstrip("/")


def _to_decimal(value: Decimal | float | int | str | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    try:
        # str() first so 0.1 means the decimal 0.1, not the binary float's expansion.
        return Decimal(str(value))
    except InvalidOperation:
        msg = f"FalConfig.daily_budget_usd={value!r} is not valid: expected an amount in USD such as 25.00."
        raise ConfigurationError(msg, variable="daily_budget_usd") from None


@attrs.frozen
class FalConfig:
    """Everything a :class:`~falwrap.FalClient` needs; frozen and validated.

    The API key is never shown: not in ``repr``, logs, exceptions or CLI output.

    Args:
        api_key: fal key (``key_id:key_secret``). ``None`` is allowed here, but a
            client refuses to start without one.
        base_url: Send every request meant for a fal host (queue.fal.run, fal.run,
            rest.fal.ai, the CDN, api.fal.ai) to this URL instead, path unchanged:
            for the emulator, tests and corporate proxies.
        timeouts: Deadlines per operation.
        retry: Retry policy.
        rate_limit: Pacing and concurrency.
        daily_budget_usd: Stop spending once today's (UTC) cost would pass this.
        live_pricing: Fetch prices from fal's platform API instead of the
            built-in catalog's.
        poll_interval: First interval in seconds between status polls when the
            status stream is unavailable; it backs off from there.
        status_stream: Follow jobs on fal's server-sent status stream (one
            request per job instead of a poll every ``poll_interval``). Turn it
            off behind proxies that buffer streaming responses.
    """

    api_key: str | None = attrs.field(default=None, repr=False)
    base_url: str | None = attrs.field(
        default=None,
        converter=_normalise_base_url,
        validator=_check(lambda v: v is None or v.startswith(("http://", "https://")), "an http:// or https:// URL"),
    )
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    rate_limit: RateLimitConfig = attrs.field(factory=RateLimitConfig)
    daily_budget_usd: Decimal | None = attrs.field(
        default=None,
        converter=_to_decimal,
        validator=_check(lambda v: v is None or (v.is_finite() and v >= 0), "zero or a positive amount in USD"),
    )
    live_pricing: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    poll_interval: float = attrs.field(
        default=0.1, validator=_check(lambda v: _finite(v) and 0 < v <= 60, "seconds between 0 and 60")
    )
    status_stream: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    store_url: str = attrs.field(
        default="memory:",
        validator=_check(
            lambda v: isinstance(v, str)
            and v.split(":", 1)[0].lower() in {"memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix"},
            "memory:, sqlite:///absolute/path.db, postgresql://..., or redis://...",
        ),
        repr=lambda v: v if "@" not in v else v.split("://", 1)[0] + "://***@" + v.rsplit("@", 1)[1],
    )
    webhook_url: str | None = attrs.field(
        default=None,
        validator=_check(lambda v: v is None or (isinstance(v, str) and v.startswith(("http://", "https://"))),
                         "an http:// or https:// URL"),
    )  # fmt: skip
    webhook_jwks_url: str = attrs.field(
        default="https://rest.alpha.fal.ai/.well-known/jwks.json",
        validator=_check(lambda v: isinstance(v, str) and v.startswith(("http://", "https://")), "an http(s) URL"),
    )
    idempotency_ttl: float = attrs.field(default=86_400.0, validator=_positive_seconds)
    queue_priority: str = attrs.field(
        default="normal", validator=_check(lambda v: v in {"normal", "low"}, "normal or low")
    )
    start_timeout: float | None = attrs.field(
        default=None, validator=_check(lambda v: v is None or (_finite(v) and v >= 1), "None or seconds >= 1")
    )
    object_lifecycle: int | None = attrs.field(
        default=None,
        validator=_check(lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                         "None or whole seconds >= 1"),
    )  # fmt: skip
    server_retries: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    fallbacks: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    resubmit_ambiguous: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        # The Redis URL of RateLimitConfig is where shared state lives, for every part.
        if self.store_url == "memory:" and self.rate_limit.redis_url:
            object.__setattr__(self, "store_url", self.rate_limit.redis_url)

    @property
    def key_fingerprint(self) -> str:
        """A short, stable, non-reversible name for the key (for shared Redis keys and logs)."""
        if not self.api_key:
            return "nokey"
        return hashlib.sha256(self.api_key.encode()).hexdigest()[:16]

    @classmethod
    def from_env(
        cls,
        env_file: str | os.PathLike[str] | None = ".env",
        *,
        environ: Mapping[str, str] | None = None,
    ) -> FalConfig:
        """Build a config from environment variables and an optional ``.env`` file.

        Real environment variables win over the file. A missing file is fine.
        Every variable is documented in ``.env.example``.

        Args:
            env_file: Path of a dotenv file, or ``None`` to read none.
            environ: The environment to read (default: ``os.environ``).

        Raises:
            ConfigurationError: a variable is set but invalid; the message names
                the variable, the bad value and what is expected.
        """
        values = _merged_environment(env_file, os.environ if environ is None else environ)
        return _config_from_values(values)


def read_environment(env_file: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``from_env`` would see: ``env_file``'s, overridden by ``environ``; blanks dropped.

    For integrations that merge their own settings on top (Django's ``FALWRAP``, Flask's config).
    """
    return _merged_environment(env_file, environ)


def _merged_environment(env_file: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(environ)
    return {k: v.strip() for k, v in merged.items() if v.strip() != ""}


def _parse(values: Mapping[str, str], name: str, convert: Callable[[str], _T], expected: str) -> _T | None:
    raw = values.get(name)
    if raw is None:
        return None
    try:
        return convert(raw)
    except (ValueError, ArithmeticError):
        msg = f"{name}={raw!r} is not valid: expected {expected}."
        raise ConfigurationError(msg, variable=name) from None


def _seconds_from_ms(raw: str) -> float:
    ms = float(raw)
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(raw)
    return ms / 1000.0


def _non_negative_int(raw: str) -> int:
    n = int(raw)
    if n < 0:
        raise ValueError(raw)
    return n


def _positive_int(raw: str) -> int:
    n = int(raw)
    if n < 1:
        raise ValueError(raw)
    return n


def _positive_float(raw: str) -> float:
    x = float(raw)
    if not math.isfinite(x) or x <= 0:
        raise ValueError(raw)
    return x


def _money(raw: str) -> Decimal:
    d = Decimal(raw)
    if not d.is_finite() or d < 0:
        raise ValueError(raw)
    return d


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _api_key(values: Mapping[str, str]) -> str | None:
    if key := values.get("FAL_KEY") or values.get("FAL_API_KEY"):
        return key
    key_id, secret = values.get("FAL_KEY_ID"), values.get("FAL_KEY_SECRET")
    if key_id and secret:
        return f"{key_id}:{secret}"
    return None


def _shared_settings(values: Mapping[str, str]) -> dict[str, Any]:
    """Where shared state lives and where webhooks go, from the environment."""
    found: dict[str, Any] = {}
    if store := values.get("FALWRAP_STORE_URL"):
        found["store_url"] = store
    for var, field in (("FALWRAP_WEBHOOK_URL", "webhook_url"), ("FALWRAP_WEBHOOK_JWKS_URL", "webhook_jwks_url")):
        if value := values.get(var):
            if not value.startswith(("http://", "https://")):
                msg = f"{var}={value!r} is not valid: expected an http:// or https:// URL."
                raise ConfigurationError(msg, variable=var)
            found[field] = value
    return found


def _config_from_values(values: Mapping[str, str]) -> FalConfig:
    ms = "a positive number of milliseconds, such as 60000"
    timeouts: dict[str, float] = {}
    for var, field in (
        ("FAL_TIMEOUT_IMAGE", "image"),
        ("FAL_TIMEOUT_UPSCALE", "upscale"),
        ("FAL_TIMEOUT_VIDEO_SHORT", "video_short"),
        ("FAL_TIMEOUT_VIDEO", "video_standard"),
        ("FAL_TIMEOUT_VIDEO_LONG", "video_long"),
        ("FAL_TIMEOUT_MODEL_LIST", "model_list"),
        ("FAL_TIMEOUT_QUEUE_STATUS", "queue_status"),
    ):
        seconds = _parse(values, var, _seconds_from_ms, ms)
        if seconds is not None:
            timeouts[field] = seconds

    retry: dict[str, Any] = {}
    if (n := _parse(values, "FAL_MAX_RETRIES", _non_negative_int, "a whole number >= 0, such as 3")) is not None:
        retry["max_retries"] = n
    if (d := _parse(values, "FAL_RETRY_DELAY", _seconds_from_ms, ms.replace("60000", "1000"))) is not None:
        retry["base_delay"] = d
        retry["max_delay"] = max(d, RetryConfig().max_delay)
    if (m := _parse(values, "FAL_RETRY_MAX_DELAY", _seconds_from_ms, ms.replace("60000", "8000"))) is not None:
        retry["max_delay"] = m

    rate: dict[str, Any] = {}
    if (rpm := _parse(values, "FAL_REQUESTS_PER_MINUTE", _positive_float, "a positive number, such as 60")) is not None:
        rate["requests_per_minute"] = rpm
    if (burst := _parse(values, "FAL_RATE_BURST", _positive_int, "a whole number >= 1")) is not None:
        rate["burst"] = burst
    if (conc := _parse(values, "FAL_MAX_CONCURRENT", _positive_int, "a whole number >= 1")) is not None:
        rate["max_concurrent"] = conc
    if url := values.get("FALWRAP_REDIS_URL"):
        if not url.startswith(("redis://", "rediss://", "unix://")):
            msg = "FALWRAP_REDIS_URL is not valid: expected a redis://, rediss:// or unix:// URL."
            raise ConfigurationError(msg, variable="FALWRAP_REDIS_URL")
        rate["redis_url"] = url

    base_url = values.get("FAL_BASE_URL")
    if base_url and not base_url.startswith(("http://", "https://")):
        msg = f"FAL_BASE_URL={base_url!r} is not valid: expected an http:// or https:// URL."
        raise ConfigurationError(msg, variable="FAL_BASE_URL")

    try:
        return FalConfig(
            api_key=_api_key(values),
            base_url=base_url,
            timeouts=Timeouts(**timeouts),
            retry=RetryConfig(**retry),
            rate_limit=RateLimitConfig(**rate),
            daily_budget_usd=_parse(values, "FAL_DAILY_BUDGET_USD", _money, "an amount in USD >= 0, such as 25.00"),
            live_pricing=bool(_parse(values, "FALWRAP_LIVE_PRICING", _boolean, "true or false")),
            poll_interval=_parse(values, "FALWRAP_POLL_INTERVAL", _seconds_from_ms, ms.replace("60000", "100")) or 0.1,
            status_stream=_parse(values, "FALWRAP_STATUS_STREAM", _boolean, "true or false") is not False,
            **_shared_settings(values),
        )
    except ConfigurationError as exc:
        # A value that parsed but broke a cross-field rule (max_delay < base_delay, ...).
        msg = f"{exc.message} (from the environment or .env)"
        raise ConfigurationError(msg, variable=exc.variable) from None
