"""The Celery app the worker tests run (tests/test_contrib_celery.py), configured from the environment.

A worker runs ``celery -A contrib_celery_app:app worker``; the test process builds the
same app with :func:`make_app` to send tasks and read results. Every key the broker
and the result backend write starts with ``FALWRAP_TEST_PREFIX``, and the queue has that
name, so concurrent test runs on one Redis never see each other's messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery

from falwrap.contrib.celery import FalTask


def make_app(env: Mapping[str, str]) -> Celery:
    """The test app: broker ``FALWRAP_TEST_BROKER``, results in ``FALWRAP_TEST_BACKEND`` (Redis)."""
    prefix = env["FALWRAP_TEST_PREFIX"]
    broker = env["FALWRAP_TEST_BROKER"]
    app = Celery("contrib_celery_app", broker=broker, backend=env["FALWRAP_TEST_BACKEND"])
    transport: dict[str, Any] = {}
    if broker.startswith("redis"):
        transport = {
            "global_keyprefix": f"{prefix}:",
            # Redis has no acknowledgement: a message unacknowledged this long is delivered again.
            "visibility_timeout": float(env.get("FALWRAP_TEST_VISIBILITY", "3600")),
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    app.conf.update(
        task_default_queue=prefix,
        broker_transport_options=transport,
        result_backend_transport_options={"global_keyprefix": f"{prefix}:"},
        result_extended=True,
        worker_prefetch_multiplier=1,
        # No broadcast queues or exchanges left behind on the shared broker.
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )

    @app.task(base=FalTask, bind=True, name="falwrap_test.make_image")
    def make_image(self: FalTask, prompt: str, model: str) -> object:
        return self.fal.image(prompt, model=model)

    @app.task(base=FalTask, bind=True, name="falwrap_test.make_image_hasty", fal_max_wait=1.0)
    def make_image_hasty(self: FalTask, prompt: str, model: str) -> object:
        return self.fal.image(prompt, model=model)

    @app.task(name="falwrap_test.pid")
    def pid() -> int:
        return os.getpid()

    return app


app = make_app(os.environ) if "FALWRAP_TEST_BROKER" in os.environ else None
