"""A canary key must never leak: not in reprs, DEBUG logs, exceptions or CLI output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from falwrap import AuthenticationError, FalClient, FalConfig, InvalidInputError, RateLimitConfig
from falwrap.testing import FakeFal, Fault

CANARY_ID = "canaryid-7f3a9c"
CANARY_SECRET = "canarysecret-51d2e8b4"
CANARY = f"{CANARY_ID}:{CANARY_SECRET}"


def _leaks(text: str) -> bool:
    return CANARY_ID in text or CANARY_SECRET in text


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(key=CANARY, latency=0.02) as server:
        yield server


def test_reprs_hide_the_key(fal: FakeFal) -> None:
    """The config, the client, its fal_client and its results never show the key."""
    config = FalConfig(api_key=CANARY, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=60_000))
    with FalClient(config) as client:
        result = client.image("a cat")
        texts = [repr(config), str(config), repr(client), repr(client._runner._fal), repr(client.limiter),
                 repr(client.ledger), repr(result), repr(client._http.headers)]  # fmt: skip
    assert not any(_leaks(t) for t in texts)


def test_debug_logs_hide_the_key(fal: FakeFal, caplog: pytest.LogCaptureFixture) -> None:
    """With every logger at DEBUG (falwrap, httpx, httpcore, fal_client), no line holds the key."""
    config = FalConfig(api_key=CANARY, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=60_000))
    caplog.set_level(logging.DEBUG)
    fal.inject("status", Fault.http(503, json={"detail": "busy"}), times=1)
    with FalClient(config) as client:
        client.image("a cat")
        with pytest.raises(InvalidInputError):
            client.image("")
    assert len(caplog.records) > 5
    for record in caplog.records:
        assert not _leaks(record.getMessage()), record.getMessage()
        assert not _leaks(repr(record.__dict__))


def test_exceptions_hide_the_key(fal: FakeFal) -> None:
    """An authentication failure's message, repr and full traceback do not hold the key."""
    wrong = "canaryid-7f3a9c:canarysecret-wrong"
    config = FalConfig(api_key=wrong, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=60_000))
    with FalClient(config) as client, pytest.raises(AuthenticationError) as info:
        client.image("a cat")
    text = str(info.value) + repr(info.value) + "".join(traceback.format_exception(info.value))
    assert "canarysecret-wrong" not in text
    assert "FAL_KEY" in str(info.value)


def test_cli_output_hides_the_key(fal: FakeFal, tmp_path: Path) -> None:
    """The falwrap command, on success and on failure, never prints the key."""
    env = {**os.environ, "FAL_KEY": CANARY, "FAL_BASE_URL": fal.url, "FAL_REQUESTS_PER_MINUTE": "60000"}
    ok = subprocess.run(
        [sys.executable, "-m", "falwrap.cli", "image", "a cat", "--out", str(tmp_path), "--json"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    bad_env = {**env, "FAL_KEY": "canaryid-7f3a9c:canarysecret-51d2e8b4-wrong"}
    bad = subprocess.run(
        [sys.executable, "-m", "falwrap.cli", "--debug", "image", "a cat", "--out", str(tmp_path)],
        env=bad_env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 4, bad.stderr
    for text in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert not _leaks(text)
