"""Call records and threads for the ledger tests (in-process and Redis)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from falwrap.ledger import CallRecord

T0 = datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)


def rec(
    cost: str = "0.003",
    *,
    model: str = "fal-ai/flux/dev",
    success: bool = True,
    duration: float = 100,
    at: datetime = T0,
    error_code: str | None = None,
    **kwargs: Any,
) -> CallRecord:
    return CallRecord(
        timestamp=at,
        model_id=model,
        operation="generate",
        duration_ms=duration,
        cost_usd=Decimal(cost),
        success=success,
        error_code=error_code,
        **kwargs,
    )


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
