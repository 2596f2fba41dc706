"""Fixtures shared by the whole suite.

Redis-backed tests use the real server on 127.0.0.1:6379. On a developer's
laptop without one they skip with a reason; under CI (``CI=true``) a missing
server is a failure, because CI must exercise the multi-process guarantees.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.node import install_js_client

REDIS_URL = os.environ.get("FALWRAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The falwrap command keeps its journal in the user's data directory: give the suite its own."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def js_dir() -> Path:
    """tests/js with @fal-ai/client installed; skips locally, fails in CI, without Node.js and npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        reason = "Node.js and npm are needed for the @fal-ai/client tests"
        if _in_ci():
            pytest.fail(f"{reason}, and CI=true requires them")
        pytest.skip(reason)
    return install_js_client()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis (database 15); skips locally, fails in CI, when none answers."""
    try:
        import redis
    except ImportError:  # pragma: no cover - the dev extra installs it
        if _in_ci():
            pytest.fail("redis-py is not installed but CI=true requires the Redis tests")
        pytest.skip("redis-py is not installed (pip install -e '.[dev]')")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if _in_ci():
            pytest.fail(f"Redis at {REDIS_URL} is not answering ({exc}) and CI=true requires it")
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); start one to run the multi-process tests")
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A redis-py client on the test database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_namespace(redis_client: Any) -> Iterator[str]:
    """A unique key prefix (or store namespace) for one test; its keys are deleted afterwards.

    Keys made with it directly start with it; a store's keys start with ``falwrap:<namespace>:``.
    """
    prefix = f"falwrap-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    for pattern in (f"{prefix}*", f"falwrap:{prefix}:*"):
        for key in redis_client.scan_iter(match=pattern, count=1000):
            redis_client.delete(key)
