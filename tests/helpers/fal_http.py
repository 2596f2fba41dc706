"""Plain HTTP helpers for talking to FakeFal the way a client rerouted to it does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from falwrap.testing import FakeFal

DEV = "fal-ai/flux/dev"
SCHNELL = "fal-ai/flux/schnell"
KLING = "fal-ai/kling-video/v1/standard/image-to-video"


def raw(fal: FakeFal, host: str | None = None, key: str | None = None, timeout: float = 10.0) -> httpx.Client:
    """An httpx client on the emulator; with ``host``, every request says it was meant for that fal host."""
    headers = {"Authorization": f"Key {key or fal.key}"}
    if host is not None:
        headers["X-Forwarded-Host"] = host
    return httpx.Client(base_url=fal.url, headers=headers, timeout=timeout)


def submit(
    client: httpx.Client, model: str = DEV, arguments: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    """Submit to the queue and return the answer, asserting it is a 200."""
    response = client.post(f"/{model}", json=arguments if arguments is not None else {"prompt": "a cat"}, **kw)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def wait_completed(client: httpx.Client, handle: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Poll a job's status until COMPLETED and return that status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(handle["status_url"], params={"logs": 1}).json()
        if status["status"] == "COMPLETED":
            return status
        time.sleep(0.01)
    raise AssertionError(f"job {handle['request_id']} did not complete in {timeout} s")


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true (generous bound for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
