"""A load generator run as its own process, so its threads do not compete with FakeFal's for the GIL.

``python contrib_loadgen.py URL N JSON_BODY`` POSTs the body from N threads
released together and prints one JSON list of ``[status, body, headers]``.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from contrib_helpers import http_json


def fire(url: str, n: int, body: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    """POST ``body`` to ``url`` from ``n`` threads released at the same moment."""
    barrier = threading.Barrier(n)

    def one(_: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        barrier.wait()
        return http_json("POST", url, body, timeout=60)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


if __name__ == "__main__":
    print(json.dumps(fire(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))))
