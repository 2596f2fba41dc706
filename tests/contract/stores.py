"""How each store kind is opened for the contract suites, and how a test gets a fresh one.

A test asks the ``store`` fixture (see ``conftest.py``) for a :class:`StoreFactory`;
``factory.open()`` opens a :class:`~falwrap.backends.base.Store` on it and
``factory.journal()`` its journal. Calling either twice gives two instances on
the *same* store (two processes' view of one database), except for ``memory``,
which lives in one object.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from falwrap.backends.base import Store
from falwrap.journal import Journal

#: Every store kind, in the order the suites run them.
KINDS = ("memory", "sqlite", "postgresql", "redis")

POSTGRES_URL = os.environ.get("FALWRAP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FALWRAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def in_ci() -> bool:
    """Whether a missing service must fail the run rather than skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip on a laptop without the service; fail under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} and CI=true requires it")
    pytest.skip(reason)


class StoreFactory:
    """Opens stores (for shared kinds, several instances) on one fresh server namespace; closes them all."""

    def __init__(self, kind: str, url: str, namespace: str) -> None:
        self.kind = kind
        self.url = url
        self.namespace = namespace
        self._opened: list[Store] = []
        self._memory: Store | None = None

    @property
    def shared(self) -> bool:
        """Whether two instances see one store (every kind but ``memory``)."""
        return self.kind != "memory"

    def open(self) -> Store:
        """A store instance (the same object every time for ``memory``)."""
        from falwrap.backends import open_store

        if self.kind == "memory":
            if self._memory is None:
                self._memory = open_store(self.url, namespace=self.namespace)
            return self._memory
        store = open_store(self.url, namespace=self.namespace)
        self._opened.append(store)
        return store

    def journal(self) -> Journal:
        """The journal of a new store instance."""
        return self.open().journal

    def close(self) -> None:
        """Close every store opened here."""
        for store in self._opened:
            store.close()


def _postgres_ready() -> None:
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[dev]')")
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        unavailable(f"no PostgreSQL at {POSTGRES_URL} ({exc})")


def _redis_ready() -> None:
    try:
        import redis
    except ImportError:
        unavailable("redis-py is not installed (pip install -e '.[dev]')")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"no Redis at {REDIS_URL} ({exc})")


@contextmanager
def fresh_store(kind: str, tmp_path: Path) -> Iterator[StoreFactory]:
    """A new, empty store of ``kind``, removed afterwards."""
    namespace = f"falwrap-test-{uuid.uuid4().hex[:12]}"
    if kind == "memory":
        factory = StoreFactory(kind, "memory:", namespace)
    elif kind == "sqlite":
        factory = StoreFactory(kind, f"sqlite:///{tmp_path / 'journal.db'}", namespace)
    elif kind == "postgresql":
        _postgres_ready()
        factory = StoreFactory(kind, POSTGRES_URL, namespace)
    elif kind == "redis":
        _redis_ready()
        factory = StoreFactory(kind, REDIS_URL, namespace)
    else:  # pragma: no cover - a typo in a parametrisation
        msg = f"unknown store kind {kind!r}"
        raise ValueError(msg)
    try:
        yield factory
    finally:
        factory.close()
        _wipe(kind, factory)


def _wipe(kind: str, factory: StoreFactory) -> None:
    """Delete what a test wrote to a shared server (files under tmp_path go by themselves)."""
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"*{factory.namespace}*", count=1000):
                client.delete(key)
        finally:
            client.close()
    elif kind == "postgresql":
        from falwrap.backends import wipe_namespace

        wipe_namespace(factory.url, factory.namespace)
