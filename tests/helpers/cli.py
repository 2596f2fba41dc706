"""Running the ``falwrap`` command as a real subprocess, with its journal in a test's own data directory."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from falwrap import FalConfig
from falwrap.testing import FakeFal


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any fal or falwrap setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FALWRAP_"))}
    env.update(extra)
    return env


def command_env(data: Path, fal: FakeFal | None = None, **extra: str) -> dict[str, str]:
    """The test's environment without fal or falwrap settings; the journal under ``data``; FakeFal's URL and key."""
    env = clean_env(XDG_DATA_HOME=str(data))
    if fal is not None:
        env.update(FAL_KEY=fal.key, FAL_BASE_URL=fal.url)
    env.update(extra)
    return env


def falwrap(
    *args: str, cwd: Path, env: Mapping[str, str], timeout: float = 120, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m falwrap.cli`` with ``args``; stdout and stderr are pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "falwrap.cli", *args],
        check=False, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, stdin=stdin,
    )  # fmt: skip


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a ``--json`` command printed."""
    return json.loads(result.stdout)


def journal_url(data: Path) -> str:
    """The URL of the command's default journal under the data directory ``data``."""
    return "sqlite:///" + str(data / "falwrap" / "journal.db").lstrip("/")


def journal_daily_cost(url: str, fal: FakeFal) -> Decimal:
    """Today's spend in the journal at ``url`` for FakeFal's key, read by this process."""
    from falwrap.backends import open_store
    from falwrap.ledger import JournalLedger

    store = open_store(url, namespace=FalConfig(api_key=fal.key).key_fingerprint)
    try:
        return JournalLedger(store.journal).daily_cost()
    finally:
        store.close()


def read_until(fd: int, wanted: bytes | None, timeout: float, seen: bytearray) -> bool:
    """Read a terminal into ``seen`` until ``wanted`` appears in it (``None``: to the end), the child closes it,
    or ``timeout`` passes; whether ``wanted`` appeared."""
    deadline = time.monotonic() + timeout
    while (wanted is None or wanted not in seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen.extend(data)
    return wanted is not None and wanted in seen
