"""The configuration classes (frozen, validated when built) and the one function that builds them from variables.

Every value is checked when the object is built, so a bad setting fails at
start-up with a :class:`~falwrap.ConfigurationError` naming the setting, the
bad value and what is expected, instead of surfacing as a confusing error
mid-request. Change a setting with ``attrs.evolve(config, ...)``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

import attrs

from falwrap.config import rules
from falwrap.config.rules import (
    DEFAULT_STORE_URL,
    DEFAULT_WEBHOOK_JWKS_URL,
    MAX_BURST,
    MAX_CONCURRENT,
    MAX_DURATION_S,
    MAX_IDEMPOTENCY_TTL_S,
    MAX_OBJECT_LIFECYCLE_S,
    MAX_POLL_INTERVAL_S,
    MAX_REQUESTS_PER_MINUTE,
    MAX_RETRIES,
    MIN_REQUESTS_PER_MINUTE,
    MIN_START_TIMEOUT_S,
    QUEUE_PRIORITIES,
    REDIS_SCHEMES,
    is_finite_number,
    is_whole_number,
)
from falwrap.config.variables import ENV_VARS, KEY_NAMES, env_var, read_environment
from falwrap.errors import ConfigurationError
from falwrap.money import parse_usd

__all__ = ["FalConfig", "RateLimitConfig", "RetryConfig", "Timeouts", "config_from_values"]

QueuePriority = Literal["normal", "low"]


def _check(predicate: Callable[[Any], bool], expected: str) -> Callable[[Any, Any, Any], None]:
    """An attrs validator raising ConfigurationError (attrs' own raise TypeError or plain ValueError)."""

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


def _seconds(minimum: float, maximum: float, *, optional: bool = False, inclusive: bool = True) -> Any:
    """A validator for a duration in seconds within ``[minimum, maximum]`` (``(0, maximum]`` when not inclusive)."""
    low = f"from {minimum:g}" if inclusive else "above 0"
    expected = f"a number of seconds {low} up to {maximum:g}"
    if optional:
        expected = f"None or {expected}"

    def ok(value: Any) -> bool:
        if value is None:
            return optional
        above = value >= minimum if inclusive else value > minimum
        return is_finite_number(value) and above and value <= maximum

    return _check(ok, expected)


_boolean = _check(lambda v: isinstance(v, bool), "True or False")
_deadline = _seconds(0, MAX_DURATION_S, inclusive=False)
_delay = _seconds(0, MAX_DURATION_S)


def _instance_of(cls: type) -> Callable[[Any, Any, Any], None]:
    return _check(lambda v: isinstance(v, cls), f"a {cls.__name__}")


def _url(problem: Callable[[Any], str | None], expected: str, *, optional: bool) -> Callable[[Any, Any, Any], None]:
    """A validator for a URL that names the problem without echoing credentials."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        why = problem(value)
        if why:
            shown = rules.redact_url(value) if isinstance(value, str) else value
            name = f"{type(instance).__name__}.{attribute.name}"
            msg = f"{name}={shown!r} is not valid ({why}): expected {expected}."
            raise ConfigurationError(msg, variable=attribute.name)

    return validate


@attrs.frozen
class Timeouts:
    """Deadlines for whole operations, in seconds (each above 0 and at most 86400, a day).

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

    Raises:
        ConfigurationError: a deadline is not a number of seconds in range.
    """

    image: float = attrs.field(default=60.0, validator=_deadline)
    upscale: float = attrs.field(default=90.0, validator=_deadline)
    video_short: float = attrs.field(default=180.0, validator=_deadline)
    video_standard: float = attrs.field(default=300.0, validator=_deadline)
    video_long: float = attrs.field(default=600.0, validator=_deadline)
    model_list: float = attrs.field(default=10.0, validator=_deadline)
    queue_status: float = attrs.field(default=5.0, validator=_deadline)

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
        max_retries: Retries after the first attempt, 0 to 100; fal sees at most
            ``max_retries + 1`` submissions for one call.
        base_delay: First backoff delay in seconds.
        max_delay: Ceiling of one backoff delay in seconds, at least ``base_delay``.
        jitter: Spread delays randomly so many clients do not retry in lockstep.

    Raises:
        ConfigurationError: a value is out of range, or ``max_delay < base_delay``.
    """

    max_retries: int = attrs.field(
        default=3,
        validator=_check(
            lambda v: is_whole_number(v) and 0 <= v <= MAX_RETRIES,
            f"a whole number of retries from 0 to {MAX_RETRIES}",
        ),
    )
    base_delay: float = attrs.field(default=1.0, validator=_delay)
    max_delay: float = attrs.field(default=8.0, validator=_delay)
    jitter: bool = attrs.field(default=True, validator=_boolean)

    def __attrs_post_init__(self) -> None:
        if self.max_delay < self.base_delay:
            msg = (
                f"RetryConfig.max_delay={self.max_delay!r} is smaller than "
                f"base_delay={self.base_delay!r}: expected max_delay >= base_delay."
            )
            raise ConfigurationError(msg, variable="max_delay")


def _optional_count(maximum: int) -> Callable[[Any, Any, Any], None]:
    return _check(
        lambda v: v is None or (is_whole_number(v) and 1 <= v <= maximum), f"None or a whole number from 1 to {maximum}"
    )


@attrs.frozen
class RateLimitConfig:
    """Client-side pacing of submissions and a cap on jobs in flight.

    Args:
        requests_per_minute: Submissions allowed per minute (a leaky bucket,
            GCRA), from 0.001 to 10^9.
        burst: Submissions that may go back to back before pacing starts (1 to 10^6).
        max_concurrent: Jobs in flight at once from this client (``None``: no cap).
        redis_url: Deprecated: set :attr:`FalConfig.store_url` instead. A Redis
            URL here still makes every process sharing the key obey one limit
            (the config takes it as its ``store_url``, with a warning); a config
            whose ``store_url`` is Redis shows that URL here too.

    Raises:
        ConfigurationError: a value is out of range.
    """

    requests_per_minute: float = attrs.field(
        default=60.0,
        validator=_check(
            lambda v: is_finite_number(v) and MIN_REQUESTS_PER_MINUTE <= v <= MAX_REQUESTS_PER_MINUTE,
            f"a number of requests per minute from {MIN_REQUESTS_PER_MINUTE:g} to {MAX_REQUESTS_PER_MINUTE:,.0f}",
        ),
    )
    burst: int = attrs.field(
        default=1,
        validator=_check(lambda v: is_whole_number(v) and 1 <= v <= MAX_BURST, f"a whole number from 1 to {MAX_BURST}"),
    )
    max_concurrent: int | None = attrs.field(default=None, validator=_optional_count(MAX_CONCURRENT))
    redis_url: str | None = attrs.field(
        default=None,
        validator=_url(
            lambda v: rules.store_url_problem(v, REDIS_SCHEMES), "a redis://, rediss:// or unix:// URL", optional=True
        ),
        repr=lambda v: repr(rules.redact_url(v)),
    )
    # True when FalConfig copied its store_url here (for readers of the old name),
    # False when a person set redis_url: only the latter is the deprecated setting.
    _mirrors_store: bool = attrs.field(default=False, init=False, eq=False, repr=False)


#: Deprecation warnings already shown in this process: each is shown once.
_shown_deprecations: set[str] = set()
_deprecation_lock = threading.Lock()


def _deprecated_once(key: str, message: str) -> None:
    with _deprecation_lock:
        if key in _shown_deprecations:
            return
        _shown_deprecations.add(key)
    # 4: this function, __attrs_post_init__, the generated __init__, the caller.
    warnings.warn(message, DeprecationWarning, stacklevel=4)


def _mirrored(rate_limit: RateLimitConfig, url: str | None) -> RateLimitConfig:
    copy = attrs.evolve(rate_limit, redis_url=url)
    object.__setattr__(copy, "_mirrors_store", url is not None)
    return copy


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


def _normalise_base_url(value: Any) -> Any:
    if isinstance(value, str):
        return value.rstrip("/") or None
    return value


def _budget(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_usd(value)
    except ValueError as exc:
        msg = f"FalConfig.daily_budget_usd={value!r} is not valid: {exc}."
        raise ConfigurationError(msg, variable="daily_budget_usd") from None


def _api_key(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # The key itself never appears in the message: it may be a real secret with a typo.
    if value is None:
        return
    if not isinstance(value, str):
        msg = f"FalConfig.api_key must be text (key_id:key_secret) or None, got {type(value).__name__}."
        raise ConfigurationError(msg, variable="api_key")
    problem = rules.text_problem(value)
    if problem:
        msg = f"FalConfig.api_key is not valid ({problem}): expected the key as key_id:key_secret."
        raise ConfigurationError(msg, variable="api_key")


def _is_redis(url: str) -> bool:
    return url.partition(":")[0].lower() in REDIS_SCHEMES


@attrs.frozen
class FalConfig:
    """Everything a :class:`~falwrap.FalClient` needs; frozen and validated.

    The API key is never shown: not in ``repr``, logs, exceptions or CLI
    output. URLs are shown without passwords or query strings.

    Args:
        api_key: fal key (``key_id:key_secret``). ``None`` is allowed here, but a
            client refuses to start without one.
        base_url: Send every request meant for a fal host (queue.fal.run, fal.run,
            rest.fal.ai, the CDN, api.fal.ai) to this URL instead, path unchanged:
            for the emulator, tests and corporate proxies.
        timeouts: Deadlines per operation.
        retry: Retry policy.
        rate_limit: Pacing and concurrency.
        daily_budget_usd: Stop spending once today's (UTC) cost would pass
            this; at most 10^9 USD.
        live_pricing: Fetch prices from fal's platform API instead of the
            built-in catalog's.
        poll_interval: First interval in seconds between status polls when the
            status stream is unavailable (above 0, at most 60); it backs off from there.
        status_stream: Follow jobs on fal's server-sent status stream (one
            request per job instead of a poll every ``poll_interval``). Turn it
            off behind proxies that buffer streaming responses.
        store_url: Where shared state (limiter, concurrency cap, ledger, jobs)
            lives: ``memory:`` (this process), ``sqlite:///absolute/path.db``,
            ``postgresql://...`` (or ``postgres://``), ``redis://``,
            ``rediss://`` or ``unix://``. A Redis URL given the old way,
            ``RateLimitConfig(redis_url=...)``, is taken as the store when this
            is left at ``memory:``.
        webhook_url: Where fal should POST results (``http(s)://``), or ``None``.
        webhook_jwks_url: Where fal's webhook signing keys are published.
        idempotency_ttl: Seconds an idempotency key is remembered (default a day, at most 30 days).
        queue_priority: ``normal`` or ``low`` (``X-Fal-Queue-Priority``).
        start_timeout: Seconds a job may wait in fal's queue before it starts
            (``X-Fal-Request-Timeout``, at least 1); ``None`` derives it from
            the call's deadline.
        object_lifecycle: Whole seconds fal keeps generated files on its CDN
            (``X-Fal-Object-Lifecycle-Preference``, at least 1); ``None``: fal's default.
        server_retries: Let fal retry a failed job on its side; ``False`` sends
            ``X-Fal-No-Retry: 1``.
        fallbacks: Let fal route a job to a fallback endpoint after repeated failures.
        resubmit_ambiguous: Resubmit a submission whose answer was lost (fal may
            then run the job twice); by default falwrap raises
            :class:`~falwrap.AmbiguousSubmissionError` instead.

    Raises:
        ConfigurationError: a value has the wrong type or is out of range; the
            message names the field and what is expected.
    """

    api_key: str | None = attrs.field(default=None, converter=_blank_to_none, validator=_api_key, repr=False)
    base_url: str | None = attrs.field(
        default=None,
        converter=_normalise_base_url,
        validator=_url(rules.http_url_problem, "an http:// or https:// URL", optional=True),
    )
    timeouts: Timeouts = attrs.field(factory=Timeouts, validator=_instance_of(Timeouts))
    retry: RetryConfig = attrs.field(factory=RetryConfig, validator=_instance_of(RetryConfig))
    rate_limit: RateLimitConfig = attrs.field(factory=RateLimitConfig, validator=_instance_of(RateLimitConfig))
    daily_budget_usd: Decimal | None = attrs.field(default=None, converter=_budget)
    live_pricing: bool = attrs.field(default=False, validator=_boolean)
    poll_interval: float = attrs.field(default=0.1, validator=_seconds(0, MAX_POLL_INTERVAL_S, inclusive=False))
    status_stream: bool = attrs.field(default=True, validator=_boolean)
    store_url: str = attrs.field(
        default=DEFAULT_STORE_URL,
        kw_only=True,
        validator=_url(rules.store_url_problem, "memory:, sqlite:///path, postgresql://, redis:// ...", optional=False),
        repr=lambda v: repr(rules.redact_url(v)),
    )
    webhook_url: str | None = attrs.field(
        default=None,
        kw_only=True,
        converter=_blank_to_none,
        validator=_url(rules.http_url_problem, "None or an http:// or https:// URL", optional=True),
        repr=lambda v: repr(rules.redact_url(v)),
    )
    webhook_jwks_url: str = attrs.field(
        default=DEFAULT_WEBHOOK_JWKS_URL,
        kw_only=True,
        validator=_url(rules.http_url_problem, "an http:// or https:// URL", optional=False),
    )
    idempotency_ttl: float = attrs.field(
        default=86_400.0, kw_only=True, validator=_seconds(0, MAX_IDEMPOTENCY_TTL_S, inclusive=False)
    )
    queue_priority: QueuePriority = attrs.field(
        default="normal", kw_only=True, validator=_check(lambda v: v in QUEUE_PRIORITIES, "'normal' or 'low'")
    )
    start_timeout: float | None = attrs.field(
        default=None, kw_only=True, validator=_seconds(MIN_START_TIMEOUT_S, MAX_DURATION_S, optional=True)
    )
    object_lifecycle: int | None = attrs.field(
        default=None,
        kw_only=True,
        validator=_check(
            lambda v: v is None or (is_whole_number(v) and 1 <= v <= MAX_OBJECT_LIFECYCLE_S),
            f"None or a whole number of seconds from 1 to {MAX_OBJECT_LIFECYCLE_S:.0f}",
        ),
    )
    server_retries: bool = attrs.field(default=True, kw_only=True, validator=_boolean)
    fallbacks: bool = attrs.field(default=True, kw_only=True, validator=_boolean)
    resubmit_ambiguous: bool = attrs.field(default=False, kw_only=True, validator=_boolean)

    def __attrs_post_init__(self) -> None:
        # store_url is the one setting; rate_limit.redis_url is its deprecated
        # spelling, kept equal to it so that code reading the old name still works.
        legacy = self.rate_limit.redis_url
        if legacy is not None and not self.rate_limit._mirrors_store:
            if self.store_url == DEFAULT_STORE_URL:
                _deprecated_once(
                    "RateLimitConfig.redis_url",
                    "RateLimitConfig.redis_url is deprecated: set FalConfig(store_url=...) "
                    "(FALWRAP_STORE_URL) to say where shared state lives.",
                )
                object.__setattr__(self, "store_url", legacy)
            elif self.store_url != legacy:
                msg = (
                    f"FalConfig.store_url={rules.redact_url(self.store_url)!r} and the deprecated "
                    f"RateLimitConfig.redis_url={rules.redact_url(legacy)!r} name different stores: "
                    "expected store_url alone."
                )
                raise ConfigurationError(msg, variable="store_url")
        wanted = self.store_url if _is_redis(self.store_url) else None
        if self.rate_limit.redis_url != wanted or self.rate_limit._mirrors_store != (wanted is not None):
            object.__setattr__(self, "rate_limit", _mirrored(self.rate_limit, wanted))

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
        Every variable is listed in :data:`falwrap.config.ENV_VARS` (and
        documented in ``.env.example``); durations are in milliseconds.

        Args:
            env_file: Path of a dotenv file, or ``None`` to read none.
            environ: The environment to read (default: ``os.environ``).

        Returns:
            The validated config.

        Raises:
            ConfigurationError: a variable is set but invalid; the message names
                the variable, the value as written and what is expected, in the
                variable's unit.
        """
        return config_from_values(read_environment(env_file, os.environ if environ is None else environ))


def _api_key_from(values: Mapping[str, str]) -> str | None:
    for name in ("FAL_KEY", "FAL_API_KEY"):
        if name in values:
            parsed: str = env_var(name).parse(values[name])
            return parsed
    key_id, secret = values.get("FAL_KEY_ID"), values.get("FAL_KEY_SECRET")
    if key_id and secret:
        return f"{env_var('FAL_KEY_ID').parse(key_id)}:{env_var('FAL_KEY_SECRET').parse(secret)}"
    return None


def _store_url(values: Mapping[str, str], parsed: Mapping[str, Any]) -> str | None:
    """FALWRAP_STORE_URL, or its older name FALWRAP_REDIS_URL; both set and different is an error."""
    store, redis = parsed.get("FALWRAP_STORE_URL"), parsed.get("FALWRAP_REDIS_URL")
    if store is not None and redis is not None and store != redis:
        msg = (
            f"FALWRAP_STORE_URL={rules.redact_url(values['FALWRAP_STORE_URL'])!r} and "
            f"FALWRAP_REDIS_URL={rules.redact_url(values['FALWRAP_REDIS_URL'])!r} name different stores: "
            "expected FALWRAP_STORE_URL alone (FALWRAP_REDIS_URL is its older name)."
        )
        raise ConfigurationError(msg, variable="FALWRAP_STORE_URL")
    url: str | None = store if store is not None else redis
    return url


def _retry_delays(values: Mapping[str, str], retry: dict[str, Any]) -> None:
    """FAL_RETRY_DELAY alone raises the ceiling with it; a ceiling below the first delay names both variables."""
    if "max_delay" not in retry:
        if "base_delay" in retry:
            retry["max_delay"] = max(retry["base_delay"], RetryConfig().max_delay)
        return
    base = retry.get("base_delay", RetryConfig().base_delay)
    if retry["max_delay"] >= base:
        return
    if "FAL_RETRY_DELAY" in values:
        delay = f"FAL_RETRY_DELAY={values['FAL_RETRY_DELAY']} ms"
        fix = "lower FAL_RETRY_DELAY or raise FAL_RETRY_MAX_DELAY"
    else:
        default = env_var("FAL_RETRY_DELAY").default
        delay = f"FAL_RETRY_DELAY={default} ms (its default)"
        fix = "set FAL_RETRY_DELAY lower too"
    msg = (
        f"FAL_RETRY_MAX_DELAY={values['FAL_RETRY_MAX_DELAY']} ms is smaller than {delay}: expected the "
        f"ceiling of one backoff delay to be at least the first delay; {fix}."
    )
    raise ConfigurationError(msg, variable="FAL_RETRY_MAX_DELAY")


def config_from_values(values: Mapping[str, str]) -> FalConfig:
    """Build a :class:`~falwrap.FalConfig` from variables (as ``read_environment`` returns them).

    Variables the integrations alone read (``FALWRAP_ENV_FILE``,
    ``FALWRAP_WORKERS``) and names falwrap does not know are ignored here.

    Args:
        values: Name -> text.

    Returns:
        The validated config.

    Raises:
        ConfigurationError: a variable is invalid, or two disagree; the message
            names them and their values as written.
    """
    parsed = {
        var.name: var.parse(values[var.name])
        for var in ENV_VARS
        if var.scope == "library" and var.name in values and var.name not in KEY_NAMES
    }
    groups: dict[str, dict[str, Any]] = {"": {}, "timeouts": {}, "retry": {}, "rate_limit": {}}
    for name, value in parsed.items():
        field = env_var(name).field
        if field is not None and field != "store_url":
            group, _, attribute = field.rpartition(".")
            groups[group][attribute] = value
    store = _store_url(values, parsed)
    if store is not None:
        groups[""]["store_url"] = store
    _retry_delays(values, groups["retry"])
    try:
        return FalConfig(
            api_key=_api_key_from(values),
            timeouts=Timeouts(**groups["timeouts"]),
            retry=RetryConfig(**groups["retry"]),
            rate_limit=RateLimitConfig(**groups["rate_limit"]),
            **groups[""],
        )
    except ConfigurationError as exc:
        # Every variable was checked against the same bounds above; this names the rest.
        msg = f"{exc.message} (from the environment or .env)"
        raise ConfigurationError(msg, variable=exc.variable) from None
