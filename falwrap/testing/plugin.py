"""pytest plugin (entry point ``pytest11: falwrap``): the ``fake_fal`` fixtures.

Installing falwrap registers this plugin in every pytest run of every project
that has it installed, so importing it must cost nothing: the emulator (and
httpx, werkzeug-free but not free) is imported only when a test asks for
``fake_fal``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from falwrap.testing.emulator import FakeFal

__all__ = ["fake_fal", "fake_fal_config"]


@pytest.fixture
def fake_fal() -> Iterator[FakeFal]:
    """A started FakeFal with default models, stopped (all threads joined) after the test.

    Yields:
        The emulator; use ``fake_fal.url`` and ``fake_fal.key``.
    """
    from falwrap.testing.emulator import FakeFal

    with FakeFal() as fal:
        yield fal


@pytest.fixture
def fake_fal_config(fake_fal: FakeFal) -> Any:
    """A ``falwrap.FalConfig`` pointing at ``fake_fal``.

    Args:
        fake_fal: the emulator fixture.

    Returns:
        ``FalConfig(api_key=fake_fal.key, base_url=fake_fal.url)``.
    """
    from falwrap.config import FalConfig

    return FalConfig(api_key=fake_fal.key, base_url=fake_fal.url)
