"""The one table of environment variables: what each one sets and how it is read.

:data:`ENV_VARS` lists every variable falwrap reads: the setting it fills, the
unit a person writes it in, how it is read and checked, its default and one
line of documentation. ``FalConfig.from_env``, the Django and Flask settings
(same names), the ``falwrap config`` command and ``.env.example`` all come
from it, so a variable cannot be honoured in one place and forgotten in
another. Errors name the variable and the value in its own unit
(``FALWRAP_POLL_INTERVAL='100000' ... milliseconds``), never the field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from falwrap.config import rules
from falwrap.errors import ConfigurationError
from falwrap.money import parse_usd

if TYPE_CHECKING:
    from falwrap.config.settings import FalConfig

__all__ = [
    "ENV_VARS",
    "EnvVar",
    "ValueKind",
    "env_var",
    "read_environment",
    "settings_of",
]

Scope = Literal["library", "integrations"]


@attrs.frozen
class ValueKind:
    """How one kind of value is written in the environment and read into a config.

    Args:
        unit: What a person writes, for documentation (``milliseconds``, ``USD``...).
        expected: The accepted values, for error messages.
        kind: ``ms``, ``whole_s`` (milliseconds rounded up to whole seconds),
            ``count``, ``number``, ``usd``, ``flag``, ``url``,
            ``store``, ``redis``, ``choice``, ``secret`` or ``text``.
        minimum: Smallest accepted number (in the config's unit: seconds for ``ms``).
        maximum: Largest accepted number (in the config's unit).
        choices: Accepted words for ``choice``.
    """

    unit: str
    expected: str
    kind: str
    minimum: float = 0.0
    maximum: float = math.inf
    choices: tuple[str, ...] = ()

    def parse(self, raw: str) -> Any:
        """The config value for ``raw``.

        Args:
            raw: The variable's text, stripped.

        Returns:
            The value in the config's unit (seconds for milliseconds).

        Raises:
            ValueError: ``raw`` is not a valid value of this kind.
        """
        if self.kind == "whole_s":
            # Written in milliseconds like every duration; fal takes whole seconds, so round up.
            seconds = float(raw) / 1000
            if not (math.isfinite(seconds) and self.minimum <= seconds and math.ceil(seconds) <= self.maximum):
                raise ValueError(raw)
            return math.ceil(seconds)
        if self.kind == "ms":
            seconds = float(raw) / 1000
            low_ok = seconds >= self.minimum if self.minimum > 0 else seconds > 0
            if not (math.isfinite(seconds) and low_ok and seconds <= self.maximum):
                raise ValueError(raw)
            return seconds
        if self.kind == "count":
            count = int(raw)
            if not self.minimum <= count <= self.maximum:
                raise ValueError(raw)
            return count
        if self.kind == "number":
            number = float(raw)
            if not (math.isfinite(number) and self.minimum <= number <= self.maximum):
                raise ValueError(raw)
            return number
        if self.kind == "usd":
            return parse_usd(raw)
        if self.kind == "flag":
            lowered = raw.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if self.kind == "choice":
            if raw.lower() not in self.choices:
                raise ValueError(raw)
            return raw.lower()
        problem = _TEXT_CHECKS[self.kind](raw)
        if problem:
            raise ValueError(problem)
        return raw

    def show(self, value: Any) -> str:
        """``value`` (a config value) as it would be written in the environment; empty for unset."""
        if value is None:
            return ""
        if self.kind in ("ms", "whole_s"):
            return f"{value * 1000:.3f}".rstrip("0").rstrip(".")
        if self.kind == "flag":
            return "true" if value else "false"
        if self.kind == "number":
            return f"{value:.6f}".rstrip("0").rstrip(".")
        if isinstance(value, Decimal):
            return format(value.normalize(), "f")
        return str(value)


def _no_problem(_value: str) -> str | None:
    return None


def _redis_problem(value: str) -> str | None:
    return rules.store_url_problem(value, rules.REDIS_SCHEMES)


#: Text kinds: what is wrong with a value, or None.
_TEXT_CHECKS: Mapping[str, Callable[[str], str | None]] = {
    "url": rules.http_url_problem,
    "store": rules.store_url_problem,
    "redis": _redis_problem,
    "secret": rules.text_problem,
    "text": _no_problem,
}


def _ms(maximum_s: float, *, minimum_s: float = 0.0) -> ValueKind:
    low = f"from {minimum_s * 1000:g}" if minimum_s > 0 else "above 0"
    return ValueKind(
        "milliseconds",
        f"a number of milliseconds {low} up to {maximum_s * 1000:.0f} ({_human(maximum_s)})",
        "ms",
        minimum_s,
        maximum_s,
    )


def _human(seconds: float) -> str:
    if seconds >= 86_400 and seconds % 86_400 == 0:
        days = int(seconds // 86_400)
        return "24 h" if days == 1 else f"{days} days"
    return f"{seconds:g} s"


def _count(minimum: int, maximum: int) -> ValueKind:
    return ValueKind("count", f"a whole number from {minimum} to {maximum}", "count", minimum, maximum)


_DEADLINE = _ms(rules.MAX_DURATION_S)
_LIFECYCLE = ValueKind(
    "milliseconds",
    f"a number of milliseconds from 1000 up to {rules.MAX_OBJECT_LIFECYCLE_S * 1000:.0f} (3650 days), "
    "sent to fal in whole seconds",
    "whole_s",
    1,
    rules.MAX_OBJECT_LIFECYCLE_S,
)
_FLAG = ValueKind("true/false", "true or false", "flag")
_URL = ValueKind("URL", "an http:// or https:// URL", "url")
_SECRET = ValueKind("key", "the key as key_id:key_secret, without spaces", "secret")


@attrs.frozen
class EnvVar:
    """One environment variable falwrap reads.

    Args:
        name: The variable, e.g. ``FAL_TIMEOUT_IMAGE``.
        field: The config field it sets, dotted (``timeouts.image``); ``None``
            for variables only the web integrations read.
        value: How it is written and read.
        default: The default as documented, in the variable's unit (``""``: unset).
        doc: One line: what it does.
        section: The heading it is listed under in ``.env.example``.
        scope: ``library`` (``FalConfig.from_env`` reads it) or ``integrations``
            (only the Django and Flask integrations do).
        example: A sample value for ``.env.example`` when the default is unset.
    """

    name: str
    field: str | None
    value: ValueKind
    default: str
    doc: str
    section: str
    scope: Scope = "library"
    example: str = ""

    def parse(self, raw: str) -> Any:
        """The config value for ``raw``, or a :class:`~falwrap.ConfigurationError` naming this variable.

        Args:
            raw: The variable's text.

        Returns:
            The value in the config's unit.

        Raises:
            ConfigurationError: ``raw`` is not valid; the message shows it as written
                (a key is never shown).
        """
        try:
            return self.value.parse(raw.strip())
        except (ValueError, ArithmeticError) as exc:
            why = str(exc) if self.value.kind in ("url", "store", "redis", "secret") else ""
            shown = "is not valid" if self.value.kind == "secret" else f"={_shown(raw, self.value)!r} is not valid"
            detail = f" ({why})" if why and why != raw.strip() else ""
            msg = f"{self.name}{shown}{detail}: expected {self.value.expected}."
            raise ConfigurationError(msg, variable=self.name) from None


def _shown(raw: str, value: ValueKind) -> str:
    return rules.redact_url(raw) or raw if value.kind in ("url", "store", "redis") else raw


_CREDENTIALS = "Credentials (one of these)"
_WHERE = "Where requests go"
_DEADLINES = "Deadlines (milliseconds)"
_RETRIES = "Retries"
_RATE = "Rate limiting"
_MONEY = "Money"
_STATE = "Shared state for many processes"
_FOLLOW = "Following jobs"
_REQUEST = "Request options sent to fal"
_WEBHOOKS = "Webhooks"
_WEB = "Web integrations (falwrap.contrib.django / falwrap.contrib.flask)"

#: Every variable falwrap reads, in the order ``.env.example`` lists them.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("FAL_KEY", "api_key", _SECRET, "", "Your fal key, key_id:key_secret; a client refuses to start without one.", _CREDENTIALS),  # noqa: E501
    EnvVar("FAL_API_KEY", "api_key", _SECRET, "", "Older name for the same key; read when FAL_KEY is not set.", _CREDENTIALS),  # noqa: E501
    EnvVar("FAL_KEY_ID", "api_key", _SECRET, "", "The key's id half; used with FAL_KEY_SECRET when neither name above is set.", _CREDENTIALS),  # noqa: E501
    EnvVar("FAL_KEY_SECRET", "api_key", _SECRET, "", "The key's secret half; used with FAL_KEY_ID.", _CREDENTIALS),
    EnvVar("FAL_BASE_URL", "base_url", _URL, "", "Send every request meant for a fal host (queue, run, rest, api, CDN) to this URL instead, path unchanged.", _WHERE, example="http://127.0.0.1:8765"),  # noqa: E501
    EnvVar("FAL_TIMEOUT_IMAGE", "timeouts.image", _DEADLINE, "60000", "Deadline of a whole image call, retries and queue wait included.", _DEADLINES),  # noqa: E501
    EnvVar("FAL_TIMEOUT_UPSCALE", "timeouts.upscale", _DEADLINE, "90000", "Deadline of an upscale call.", _DEADLINES),
    EnvVar("FAL_TIMEOUT_VIDEO_SHORT", "timeouts.video_short", _DEADLINE, "180000", "Deadline of a video of 5 s or less.", _DEADLINES),  # noqa: E501
    EnvVar("FAL_TIMEOUT_VIDEO", "timeouts.video_standard", _DEADLINE, "300000", "Deadline of a video of up to 10 s.", _DEADLINES),  # noqa: E501
    EnvVar("FAL_TIMEOUT_VIDEO_LONG", "timeouts.video_long", _DEADLINE, "600000", "Deadline of a video longer than 10 s.", _DEADLINES),  # noqa: E501
    EnvVar("FAL_TIMEOUT_MODEL_LIST", "timeouts.model_list", _DEADLINE, "10000", "Deadline of a call to fal's platform API (model list, live prices).", _DEADLINES),  # noqa: E501
    EnvVar("FAL_TIMEOUT_QUEUE_STATUS", "timeouts.queue_status", _DEADLINE, "5000", "One HTTP exchange with the queue; a stalled exchange is abandoned and retried after this.", _DEADLINES),  # noqa: E501
    EnvVar("FAL_MAX_RETRIES", "retry.max_retries", _count(0, rules.MAX_RETRIES), "3", "Retries after the first attempt; fal sees at most this + 1 submissions per call.", _RETRIES),  # noqa: E501
    EnvVar("FAL_RETRY_DELAY", "retry.base_delay", _ms(rules.MAX_DURATION_S, minimum_s=0.001), "1000", "First backoff delay, doubled per retry, jittered.", _RETRIES),  # noqa: E501
    EnvVar("FAL_RETRY_MAX_DELAY", "retry.max_delay", _ms(rules.MAX_DURATION_S, minimum_s=0.001), "8000", "Ceiling of one backoff delay; at least FAL_RETRY_DELAY.", _RETRIES),  # noqa: E501
    EnvVar("FAL_REQUESTS_PER_MINUTE", "rate_limit.requests_per_minute", ValueKind("per minute", f"a number of requests per minute from {rules.MIN_REQUESTS_PER_MINUTE:g} to {rules.MAX_REQUESTS_PER_MINUTE:,.0f}", "number", rules.MIN_REQUESTS_PER_MINUTE, rules.MAX_REQUESTS_PER_MINUTE), "60", "Submissions per minute from this client (from all processes together with a shared FALWRAP_STORE_URL).", _RATE),  # noqa: E501
    EnvVar("FAL_RATE_BURST", "rate_limit.burst", _count(1, rules.MAX_BURST), "1", "Submissions that may go back to back before pacing starts.", _RATE),  # noqa: E501
    EnvVar("FAL_MAX_CONCURRENT", "rate_limit.max_concurrent", _count(1, rules.MAX_CONCURRENT), "", "Jobs in flight at once (submitted, not finished); unset: no cap.", _RATE, example="4"),  # noqa: E501
    EnvVar("FAL_DAILY_BUDGET_USD", "daily_budget_usd", ValueKind("USD", f"an amount in USD from 0 to {rules.MAX_USD:,f}, such as 25.00", "usd"), "", "Stop before today's (UTC) spend would pass this many US dollars; unset: no budget.", _MONEY, example="25.00"),  # noqa: E501
    EnvVar("FALWRAP_LIVE_PRICING", "live_pricing", _FLAG, "false", "Fetch prices from fal's platform API instead of the built-in catalog.", _MONEY),  # noqa: E501
    EnvVar("FALWRAP_STORE_URL", "store_url", ValueKind("URL", "memory:, sqlite:///absolute/path.db, postgresql://..., redis://..., rediss://... or unix://...", "store"), "memory:", "Where shared state lives (rate limit, concurrency cap, ledger, budget, jobs): memory: (this process only), sqlite:///absolute/path.db, postgresql://..., redis://..., rediss://... or unix://...; the URL never appears in logs with its password.", _STATE),  # noqa: E501
    EnvVar("FALWRAP_REDIS_URL", "store_url", ValueKind("URL", "a redis://, rediss:// or unix:// URL", "redis"), "", "Older name of FALWRAP_STORE_URL for a Redis URL (Redis for everything); both set must agree.", _STATE, example="redis://127.0.0.1:6379/0"),  # noqa: E501
    EnvVar("FALWRAP_POLL_INTERVAL", "poll_interval", _ms(rules.MAX_POLL_INTERVAL_S), "100", "First interval between status polls when the status stream is unavailable; it backs off from there to 2 s.", _FOLLOW),  # noqa: E501
    EnvVar("FALWRAP_STATUS_STREAM", "status_stream", _FLAG, "true", "Follow jobs on fal's status stream (true) or by polling (false, for proxies that buffer streaming responses).", _FOLLOW),  # noqa: E501
    EnvVar("FALWRAP_IDEMPOTENCY_TTL", "idempotency_ttl", _ms(rules.MAX_IDEMPOTENCY_TTL_S), "86400000", "How long an idempotency key is remembered.", _FOLLOW),  # noqa: E501
    EnvVar("FALWRAP_QUEUE_PRIORITY", "queue_priority", ValueKind("word", "normal or low", "choice", choices=rules.QUEUE_PRIORITIES), "normal", "Priority of submitted jobs in fal's queue.", _REQUEST),  # noqa: E501
    EnvVar("FALWRAP_START_TIMEOUT", "start_timeout", _ms(rules.MAX_DURATION_S, minimum_s=rules.MIN_START_TIMEOUT_S), "", "Longest a job may wait in fal's queue before it starts; unset: derived from the call's deadline.", _REQUEST, example="30000"),  # noqa: E501
    EnvVar("FALWRAP_OBJECT_LIFECYCLE", "object_lifecycle", _LIFECYCLE, "", "How long fal keeps generated files on its CDN (sent to fal in whole seconds); unset: fal's default.", _REQUEST, example="86400000"),  # noqa: E501
    EnvVar("FALWRAP_SERVER_RETRIES", "server_retries", _FLAG, "true", "Let fal retry a failed job on its side; false sends X-Fal-No-Retry: 1.", _REQUEST),  # noqa: E501
    EnvVar("FALWRAP_FALLBACKS", "fallbacks", _FLAG, "true", "Let fal route a job to a fallback endpoint after repeated failures.", _REQUEST),  # noqa: E501
    EnvVar("FALWRAP_RESUBMIT_AMBIGUOUS", "resubmit_ambiguous", _FLAG, "false", "Resubmit a submission whose answer was lost (fal may run it twice); false raises AmbiguousSubmissionError.", _REQUEST),  # noqa: E501
    EnvVar("FALWRAP_WEBHOOK_URL", "webhook_url", _URL, "", "Where fal should POST results of submitted jobs; unset: no webhook.", _WEBHOOKS, example="https://example.com/fal/webhook"),  # noqa: E501
    EnvVar("FALWRAP_WEBHOOK_JWKS_URL", "webhook_jwks_url", _URL, rules.DEFAULT_WEBHOOK_JWKS_URL, "Where fal publishes the keys that sign webhook deliveries.", _WEBHOOKS),  # noqa: E501
    EnvVar("FALWRAP_ENV_FILE", None, ValueKind("path", "a file path", "text"), ".env", "The dotenv file the integrations read (blank: none).", _WEB, "integrations"),  # noqa: E501
    EnvVar("FALWRAP_WORKERS", None, _count(1, rules.MAX_CONCURRENT), "", "Worker processes serving the app when the server does not say (gunicorn's -w is detected); Django warns (falwrap.W001) when several share no store.", _WEB, "integrations", example="4"),  # noqa: E501
)  # fmt: skip

_BY_NAME = {var.name: var for var in ENV_VARS}
KEY_NAMES = ("FAL_KEY", "FAL_API_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")


def env_var(name: str) -> EnvVar:
    """The table's entry for ``name``.

    Args:
        name: A variable name.

    Returns:
        Its :class:`EnvVar`.

    Raises:
        KeyError: falwrap reads no such variable.
    """
    return _BY_NAME[name]


def read_environment(env_file: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``from_env`` would see: ``env_file``'s, overridden by ``environ``; blanks dropped.

    For integrations that merge their own settings on top (Django's ``FALWRAP``, Flask's config).

    Args:
        env_file: A dotenv file, or ``None``; a missing file is fine.
        environ: The environment.

    Returns:
        Name -> stripped value.
    """
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(environ)
    return {k: v.strip() for k, v in merged.items() if v.strip() != ""}


def settings_of(config: FalConfig) -> dict[str, str]:
    """Each library variable as it would have to be written to give ``config`` (``""``: unset).

    The key is shown only as its fingerprint; URLs without passwords or queries.

    Args:
        config: A config.

    Returns:
        Variable name -> text in the variable's unit, for the table's library variables.
    """
    shown: dict[str, str] = {}
    for var in ENV_VARS:
        if var.scope != "library" or var.field is None:
            continue
        if var.field == "api_key":
            shown[var.name] = f"fingerprint {config.key_fingerprint}" if config.api_key else ""
            continue
        value: Any = config
        for part in var.field.split("."):
            value = getattr(value, part)
        if var.name == "FALWRAP_REDIS_URL":
            value = config.rate_limit.redis_url
        text = var.value.show(value)
        shown[var.name] = rules.redact_url(text) or "" if var.value.kind in ("url", "store", "redis") else text
    return shown
