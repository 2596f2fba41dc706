"""Enqueue ``generate_image`` and print its result (a JSON summary) when a worker has run it.

Usage: ``python enqueue.py PROMPT [MODEL]``. The task id goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import json
import sys

from tasks import DEFAULT_MODEL, generate_image


def main(argv: list[str]) -> int:
    """Enqueue one task, wait for it, print its summary."""
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    prompt, model = argv[0], argv[1] if len(argv) == 2 else DEFAULT_MODEL
    result = generate_image.delay(prompt, model)
    print(f"queued task {result.id}", file=sys.stderr, flush=True)
    print(json.dumps(result.get(timeout=600), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
