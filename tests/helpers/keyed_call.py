"""A child process making one keyed call, configured from the environment like any app process.

Usage: python -m tests.helpers.keyed_call KEY PROMPT [MODEL]   (KEY "-": a call without a key)
Prints one JSON line: {"request_id": ..., "urls": [...]} or {"error": type, "code": ...}.
"""

from __future__ import annotations

import json
import sys

from falwrap import FalClient, FalConfig, FalwrapError, set_testing


def main() -> int:
    key, prompt = sys.argv[1], sys.argv[2]
    model = sys.argv[3] if len(sys.argv) > 3 else "fal-ai/flux/schnell"
    set_testing(True)
    with FalClient(FalConfig.from_env(None)) as client:
        print("ready", flush=True)
        try:
            result = client.image(prompt, model=model, idempotency_key=None if key == "-" else key)
        except FalwrapError as exc:
            print(json.dumps({"error": type(exc).__name__, "code": getattr(exc, "error_code", None)}), flush=True)
            return 1
    print(json.dumps({"request_id": result.request_id, "urls": [image.url for image in result.images]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
