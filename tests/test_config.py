"""Configuration: defaults, environment and .env loading, validation messages, secrecy."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from falwrap import ConfigurationError, FalConfig, RateLimitConfig, RetryConfig, Timeouts


def test_defaults_match_the_design() -> None:
    """The documented defaults hold: 60 s images, 3 retries, 60 requests per minute."""
    config = FalConfig()
    assert config.timeouts == Timeouts(60, 90, 180, 300, 600, 10, 5)
    assert config.retry == RetryConfig(max_retries=3, base_delay=1.0, max_delay=8.0, jitter=True)
    assert config.rate_limit == RateLimitConfig(requests_per_minute=60, burst=1, max_concurrent=None)
    assert config.daily_budget_usd is None
    assert config.live_pricing is False


def test_video_deadline_depends_on_clip_length() -> None:
    """Short, standard and long clips get their own deadlines."""
    timeouts = Timeouts()
    assert timeouts.for_video(5) == 180
    assert timeouts.for_video(10) == 300
    assert timeouts.for_video(15) == 600


def test_from_env_reads_every_variable(tmp_path: Path) -> None:
    """Every documented variable is read, with milliseconds turned into seconds."""
    env = {
        "FAL_KEY": "id:secret",
        "FAL_TIMEOUT_IMAGE": "30000",
        "FAL_TIMEOUT_VIDEO": "240000",
        "FAL_MAX_RETRIES": "5",
        "FAL_RETRY_DELAY": "250",
        "FAL_REQUESTS_PER_MINUTE": "600",
        "FAL_MAX_CONCURRENT": "4",
        "FAL_DAILY_BUDGET_USD": "12.50",
        "FAL_BASE_URL": "http://127.0.0.1:9/",
        "FALWRAP_REDIS_URL": "redis://127.0.0.1:6379/3",
        "FALWRAP_LIVE_PRICING": "true",
        "FALWRAP_POLL_INTERVAL": "50",
    }
    config = FalConfig.from_env(None, environ=env)
    assert config.api_key == "id:secret"
    assert config.timeouts.image == 30.0
    assert config.timeouts.video_standard == 240.0
    assert config.retry.max_retries == 5
    assert config.retry.base_delay == 0.25
    assert config.rate_limit.requests_per_minute == 600
    assert config.rate_limit.max_concurrent == 4
    assert config.rate_limit.redis_url == "redis://127.0.0.1:6379/3"
    assert config.daily_budget_usd == Decimal("12.50")
    assert config.base_url == "http://127.0.0.1:9"
    assert config.live_pricing is True
    assert config.poll_interval == 0.05


def test_environment_wins_over_dotenv_file(tmp_path: Path) -> None:
    """A real environment variable overrides the same name in .env; the rest comes from the file."""
    env_file = tmp_path / ".env"
    env_file.write_text("FAL_KEY=from-file:secret\nFAL_MAX_RETRIES=7\n")
    config = FalConfig.from_env(env_file, environ={"FAL_KEY": "from-env:secret"})
    assert config.api_key == "from-env:secret"
    assert config.retry.max_retries == 7


def test_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    """A missing .env file is not an error."""
    config = FalConfig.from_env(tmp_path / "nope.env", environ={})
    assert config.api_key is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FAL_KEY": "a:b"}, "a:b"),
        ({"FAL_API_KEY": "old:name"}, "old:name"),
        ({"FAL_KEY_ID": "kid", "FAL_KEY_SECRET": "ksec"}, "kid:ksec"),
        ({"FAL_KEY": "new:one", "FAL_API_KEY": "old:one"}, "new:one"),
        ({"FAL_KEY_ID": "only-half"}, None),
    ],
)
def test_key_sources(env: dict[str, str], expected: str | None) -> None:
    """FAL_KEY, then FAL_API_KEY, then FAL_KEY_ID + FAL_KEY_SECRET."""
    assert FalConfig.from_env(None, environ=env).api_key == expected


@pytest.mark.parametrize(
    ("env", "variable", "value_shown"),
    [
        ({"FAL_MAX_RETRIES": "three"}, "FAL_MAX_RETRIES", "'three'"),
        ({"FAL_MAX_RETRIES": "-1"}, "FAL_MAX_RETRIES", "'-1'"),
        ({"FAL_TIMEOUT_IMAGE": "-5"}, "FAL_TIMEOUT_IMAGE", "'-5'"),
        ({"FAL_TIMEOUT_VIDEO": "soon"}, "FAL_TIMEOUT_VIDEO", "'soon'"),
        ({"FAL_REQUESTS_PER_MINUTE": "0"}, "FAL_REQUESTS_PER_MINUTE", "'0'"),
        ({"FAL_MAX_CONCURRENT": "0"}, "FAL_MAX_CONCURRENT", "'0'"),
        ({"FAL_DAILY_BUDGET_USD": "lots"}, "FAL_DAILY_BUDGET_USD", "'lots'"),
        ({"FALWRAP_LIVE_PRICING": "maybe"}, "FALWRAP_LIVE_PRICING", "'maybe'"),
        ({"FAL_BASE_URL": "ftp://x"}, "FAL_BASE_URL", "'ftp://x'"),
    ],
)
def test_bad_environment_values_name_variable_value_and_expectation(
    env: dict[str, str], variable: str, value_shown: str
) -> None:
    """An invalid variable gives ConfigurationError naming it, its value and what is expected."""
    with pytest.raises(ConfigurationError) as info:
        FalConfig.from_env(None, environ=env)
    message = str(info.value)
    assert variable in message
    assert value_shown in message
    assert "expected" in message
    assert info.value.variable == variable
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Timeouts(image=-1),
        lambda: Timeouts(queue_status=0),
        lambda: RetryConfig(max_retries=-1),
        lambda: RetryConfig(base_delay=2, max_delay=1),
        lambda: RateLimitConfig(requests_per_minute=0),
        lambda: RateLimitConfig(burst=0),
        lambda: RateLimitConfig(max_concurrent=0),
        lambda: RateLimitConfig(redis_url="http://not-redis"),
        lambda: FalConfig(daily_budget_usd="-1"),
        lambda: FalConfig(base_url="localhost:80"),
    ],
)
def test_direct_construction_is_validated(build: object) -> None:
    """Building a config object with a bad value fails at once with ConfigurationError."""
    with pytest.raises(ConfigurationError, match="expected"):
        build()  # type: ignore[operator]


def test_configs_are_frozen_and_evolve() -> None:
    """Configs cannot be mutated; attrs.evolve derives a changed copy."""
    config = FalConfig(api_key="a:b")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.api_key = "c:d"  # type: ignore[misc]
    changed = attrs.evolve(config, retry=RetryConfig(max_retries=0))
    assert changed.retry.max_retries == 0
    assert config.retry.max_retries == 3


def test_budget_is_exact_decimal() -> None:
    """A float budget becomes the decimal the person wrote, not its binary expansion."""
    assert FalConfig(daily_budget_usd=0.1).daily_budget_usd == Decimal("0.1")


def test_key_never_in_repr() -> None:
    """The key and a Redis URL (which may hold a password) are hidden from reprs."""
    config = FalConfig(api_key="canary-id:canary-secret", store_url="redis://:hunter2@127.0.0.1:6379/0")
    text = repr(config) + str(config)
    assert "canary" not in text
    assert "hunter2" not in text
    assert config.key_fingerprint != "nokey"
    assert "canary" not in config.key_fingerprint


# --- types and bounds of every field --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_url": 123}, "base_url"),
        ({"base_url": "http://"}, "base_url"),
        ({"base_url": "http://host with space"}, "base_url"),
        ({"api_key": 123}, "api_key"),
        ({"api_key": "id:secret\n"}, "api_key"),
        ({"timeouts": None}, "timeouts"),
        ({"retry": {}}, "retry"),
        ({"rate_limit": 60}, "rate_limit"),
        ({"live_pricing": "yes"}, "live_pricing"),
        ({"status_stream": 1}, "status_stream"),
        ({"poll_interval": "0.1"}, "poll_interval"),
        ({"daily_budget_usd": "1e400"}, "daily_budget_usd"),
        ({"daily_budget_usd": True}, "daily_budget_usd"),
        ({"store_url": "mysql://db"}, "store_url"),
        ({"store_url": "sqlite:///"}, "store_url"),
        ({"store_url": "sqlite://relative.db"}, "store_url"),
        ({"store_url": "memory:x"}, "store_url"),
        ({"store_url": "redis://"}, "store_url"),
        ({"store_url": 5}, "store_url"),
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"webhook_jwks_url": None}, "webhook_jwks_url"),
        ({"idempotency_ttl": 0}, "idempotency_ttl"),
        ({"idempotency_ttl": 31 * 86_400}, "idempotency_ttl"),
        ({"queue_priority": "high"}, "queue_priority"),
        ({"start_timeout": 0.5}, "start_timeout"),
        ({"start_timeout": float("nan")}, "start_timeout"),
        ({"object_lifecycle": -1}, "object_lifecycle"),
        ({"server_retries": "false"}, "server_retries"),
        ({"fallbacks": None}, "fallbacks"),
        ({"resubmit_ambiguous": 0}, "resubmit_ambiguous"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_a_configuration_error_naming_it(
    kwargs: dict[str, object], field: str
) -> None:
    """FalConfig(base_url=123), timeouts=None, retry={}, rate_limit=60, live_pricing="yes"...: ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        FalConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.variable == field
    assert f"FalConfig.{field}" in str(info.value)


def test_the_key_is_never_echoed_by_its_own_validation() -> None:
    """A key with a stray newline or of the wrong type is refused without showing it."""
    for key in ("canary-id:canary-secret\n", 12345678):
        with pytest.raises(ConfigurationError) as info:
            FalConfig(api_key=key)  # type: ignore[arg-type]
        assert "canary" not in str(info.value)
        assert "12345678" not in str(info.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Timeouts(image=1e13),
        lambda: Timeouts(video_long=86_400.001),
        lambda: RetryConfig(max_delay=float("inf")),
        lambda: RetryConfig(jitter="yes"),
        lambda: RateLimitConfig(requests_per_minute=1e300),
        lambda: RateLimitConfig(requests_per_minute=1e-9),
        lambda: RateLimitConfig(burst=10**9),
        lambda: RateLimitConfig(max_concurrent=True),
    ],
)
def test_absurd_values_are_refused_with_the_bound(build: object) -> None:
    """Values past a sane bound (a deadline above a day, 1e300 requests a minute) are refused, naming the bound."""
    with pytest.raises(ConfigurationError, match="expected"):
        build()  # type: ignore[operator]


def test_the_new_settings_have_documented_defaults() -> None:
    """Where state lives, webhooks, idempotency and fal's request options default as documented."""
    config = FalConfig()
    assert config.store_url == "memory:"
    assert config.webhook_url is None
    assert config.webhook_jwks_url == "https://rest.alpha.fal.ai/.well-known/jwks.json"
    assert config.idempotency_ttl == 86_400.0
    assert config.queue_priority == "normal"
    assert config.start_timeout is None
    assert config.object_lifecycle is None
    assert (config.server_retries, config.fallbacks, config.resubmit_ambiguous) == (True, True, False)


@pytest.mark.parametrize(
    "url",
    ["memory:", "sqlite:////var/lib/falwrap/state.db", "postgresql://app@db.internal/falwrap", "postgres://db/x",
     "redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/1", "unix:///run/redis.sock"],
)  # fmt: skip
def test_every_store_scheme_is_accepted(url: str) -> None:
    """memory:, sqlite:/// with an absolute path, postgresql://, postgres://, redis://, rediss:// and unix:// work."""
    assert FalConfig(store_url=url).store_url == url


def test_store_and_webhook_urls_hide_credentials_in_reprs() -> None:
    """A password in the store URL or a token in the webhook URL's query never shows in repr."""
    config = FalConfig(
        store_url="postgresql://app:hunter2@db/falwrap?sslpassword=pw2", webhook_url="https://x.io/hook?token=t0ken"
    )
    text = repr(config)
    for secret in ("hunter2", "pw2", "t0ken"):
        assert secret not in text
    assert "db/falwrap" in text


def test_a_redis_store_url_is_also_visible_under_the_old_name() -> None:
    """store_url=redis://... shows as rate_limit.redis_url for code that reads the old name; memory: clears it."""
    config = FalConfig(store_url="redis://127.0.0.1:6379/2")
    assert config.rate_limit.redis_url == "redis://127.0.0.1:6379/2"
    offline = attrs.evolve(config, store_url="memory:")
    assert offline.store_url == "memory:"
    assert offline.rate_limit.redis_url is None
    moved = attrs.evolve(config, store_url="sqlite:////tmp/x.db")
    assert moved.rate_limit.redis_url is None


def test_the_old_redis_url_becomes_the_store_and_warns_once() -> None:
    """RateLimitConfig(redis_url=...) still shares state (as store_url), with one DeprecationWarning per process."""
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "from falwrap import FalConfig, RateLimitConfig\n"
        "try:\n"
        "    FalConfig(rate_limit=RateLimitConfig(redis_url='redis://127.0.0.1:6379/3'))\n"
        "except DeprecationWarning as w:\n"
        "    print('warned', 'store_url' in str(w))\n"
        "c = FalConfig(rate_limit=RateLimitConfig(redis_url='redis://127.0.0.1:6379/3'))\n"
        "print(c.store_url)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["warned", "True", "redis://127.0.0.1:6379/3"]


def test_two_different_stores_are_refused() -> None:
    """store_url and the deprecated redis_url naming different stores is a ConfigurationError naming store_url."""
    with pytest.raises(ConfigurationError, match="different stores") as info:
        FalConfig(store_url="redis://a:6379/0", rate_limit=RateLimitConfig(redis_url="redis://b:6379/0"))
    assert info.value.variable == "store_url"


# --- the environment: every variable, in its unit ---------------------------------------------------


def test_from_env_reads_the_new_variables() -> None:
    """Store, webhooks, idempotency and request options come from their variables, durations in ms."""
    env = {
        "FALWRAP_STORE_URL": "sqlite:////tmp/falwrap.db",
        "FALWRAP_WEBHOOK_URL": "https://example.com/hook",
        "FALWRAP_WEBHOOK_JWKS_URL": "http://127.0.0.1:9/jwks",
        "FALWRAP_IDEMPOTENCY_TTL": "3600000",
        "FALWRAP_QUEUE_PRIORITY": "LOW",
        "FALWRAP_START_TIMEOUT": "30000",
        "FALWRAP_OBJECT_LIFECYCLE": "86400000",
        "FALWRAP_SERVER_RETRIES": "false",
        "FALWRAP_FALLBACKS": "no",
        "FALWRAP_RESUBMIT_AMBIGUOUS": "yes",
        "FALWRAP_STATUS_STREAM": "off",
    }
    config = FalConfig.from_env(None, environ=env)
    assert config.store_url == "sqlite:////tmp/falwrap.db"
    assert config.webhook_url == "https://example.com/hook"
    assert config.webhook_jwks_url == "http://127.0.0.1:9/jwks"
    assert config.idempotency_ttl == 3600.0
    assert config.queue_priority == "low"
    assert config.start_timeout == 30.0
    assert config.object_lifecycle == 86_400.0
    assert (config.server_retries, config.fallbacks, config.resubmit_ambiguous) == (False, False, True)
    assert config.status_stream is False


def test_redis_url_variable_is_the_store_and_must_agree_with_it() -> None:
    """FALWRAP_REDIS_URL alone sets store_url; with a different FALWRAP_STORE_URL it names both."""
    assert FalConfig.from_env(None, environ={"FALWRAP_REDIS_URL": "redis://h:1/2"}).store_url == "redis://h:1/2"
    same = {"FALWRAP_REDIS_URL": "redis://h:1/2", "FALWRAP_STORE_URL": "redis://h:1/2"}
    assert FalConfig.from_env(None, environ=same).store_url == "redis://h:1/2"
    with pytest.raises(ConfigurationError) as info:
        FalConfig.from_env(None, environ={**same, "FALWRAP_STORE_URL": "redis://h:1/3"})
    assert "FALWRAP_STORE_URL" in str(info.value)
    assert "FALWRAP_REDIS_URL" in str(info.value)


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({"FAL_MAX_RETRIES": "101"}, ["FAL_MAX_RETRIES", "'101'", "0 to 100"]),
        ({"FALWRAP_POLL_INTERVAL": "100000"}, ["FALWRAP_POLL_INTERVAL", "'100000'", "milliseconds", "60000"]),
        ({"FAL_RETRY_MAX_DELAY": "10"}, ["FAL_RETRY_MAX_DELAY=10 ms", "FAL_RETRY_DELAY=1000 ms (its default)"]),
        ({"FAL_RETRY_MAX_DELAY": "10", "FAL_RETRY_DELAY": "500"}, ["FAL_RETRY_MAX_DELAY=10", "FAL_RETRY_DELAY=500 ms"]),
        ({"FAL_TIMEOUT_IMAGE": "1e13"}, ["FAL_TIMEOUT_IMAGE", "'1e13'", "86400000 (24 h)"]),
        ({"FAL_DAILY_BUDGET_USD": "1e400"}, ["FAL_DAILY_BUDGET_USD", "'1e400'", "1,000,000,000"]),
        ({"FAL_REQUESTS_PER_MINUTE": "inf"}, ["FAL_REQUESTS_PER_MINUTE", "'inf'"]),
        ({"FALWRAP_STORE_URL": "mysql://u:hunter2@db/x"}, ["FALWRAP_STORE_URL", "scheme"]),
        ({"FALWRAP_QUEUE_PRIORITY": "urgent"}, ["FALWRAP_QUEUE_PRIORITY", "'urgent'", "normal or low"]),
        ({"FALWRAP_START_TIMEOUT": "500"}, ["FALWRAP_START_TIMEOUT", "'500'", "from 1000"]),
        ({"FAL_KEY": "id:sec ret"}, ["FAL_KEY", "spaces"]),
    ],
)
def test_errors_name_the_variable_and_the_value_in_its_unit(env: dict[str, str], shown: list[str]) -> None:
    """Errors name the variable the user set and its value as written, never the field in seconds."""
    with pytest.raises(ConfigurationError) as info:
        FalConfig.from_env(None, environ=env)
    message = str(info.value)
    for words in shown:
        assert words in message
    assert "RetryConfig" not in message
    assert "FalConfig." not in message
    assert "hunter2" not in message
    assert "sec ret" not in message
