"""Configuration: defaults, environment and .env loading, validation messages, secrecy."""

from __future__ import annotations

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
    config = FalConfig(
        api_key="canary-id:canary-secret",
        rate_limit=RateLimitConfig(redis_url="redis://:hunter2@127.0.0.1:6379/0"),
    )
    text = repr(config) + str(config)
    assert "canary" not in text
    assert "hunter2" not in text
    assert config.key_fingerprint != "nokey"
    assert "canary" not in config.key_fingerprint
