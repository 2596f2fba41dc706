"""A Celery app whose task generates an image on fal through falwrap (see README.md).

Run a worker, then enqueue::

    celery -A tasks worker --loglevel INFO
    python enqueue.py "a lighthouse at dusk"

Settings come from the environment: the broker (``CELERY_BROKER_URL``, results in
``CELERY_RESULT_BACKEND``, queue ``CELERY_QUEUE``) and falwrap's (``FAL_KEY``,
``FALWRAP_STORE_URL``, ``FAL_REQUESTS_PER_MINUTE``, ...; see ``.env.example``).
"""

from __future__ import annotations

import os

from celery import Celery

from falwrap.contrib.celery import FalTask

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("tasks", broker=BROKER_URL, backend=os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL))
app.conf.update(
    task_default_queue=os.environ.get("CELERY_QUEUE", "fal"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # With acks_late (FalTask's default) a worker takes only the task it runs: a worker
    # killed mid-job leaves one task to redeliver, not a prefetched batch.
    worker_prefetch_multiplier=1,
    # On a Redis broker a task not acknowledged within this time is delivered again:
    # keep it above the longest job plus the longest rate-limit deferral.
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
)

#: The cheapest image model: a demo should not spend much.
DEFAULT_MODEL = "fal-ai/flux/schnell"


@app.task(base=FalTask, bind=True)
def generate_image(self: FalTask, prompt: str, model: str = DEFAULT_MODEL) -> object:
    """Generate one image; the task's result is a JSON summary: request id, model, cost, URLs, state."""
    return self.fal.image(prompt, model=model)
