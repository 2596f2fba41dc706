"""Serve FakeFal, falwrap's fal emulator, on 127.0.0.1 until Ctrl-C: run the example offline.

Usage: ``python fake_fal.py [PORT]`` (default 8765). It prints the two variables that
point a worker at it, in shell syntax.
"""

from __future__ import annotations

import sys
import threading

from falwrap.testing import FakeFal


def main(argv: list[str]) -> int:
    """Start FakeFal, print its settings, serve until interrupted."""
    port = int(argv[0]) if argv else 8765
    with FakeFal(port=port) as fal:
        print(f"export FAL_KEY='{fal.key}' FAL_BASE_URL='{fal.url}'", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print(f"FakeFal billed ${fal.billed_total} for {fal.submissions} jobs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
