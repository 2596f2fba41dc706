"""The ``store`` fixture: every contract case runs once per store kind (memory, SQLite, PostgreSQL, Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.stores import KINDS, StoreFactory, fresh_store


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A fresh, empty store of each kind; skipped (failed under CI=true) when its server is absent."""
    with fresh_store(request.param, tmp_path) as factory:
        yield factory
