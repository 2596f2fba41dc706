"""falwrap.contrib.celery with real Celery workers: redelivered tasks never pay twice, the limiter never blocks.

Workers are real ``celery worker`` processes (prefork pool) on the Redis at
127.0.0.1:6379 (database 15, every key under a unique prefix) or the RabbitMQ at
127.0.0.1:5672; falwrap's store is the same Redis, under the namespace of the test's
own FakeFal key, so the workers share one journal and one rate limiter.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import psutil
import pytest
from celery import Celery
from contrib_celery_app import make_app
from contrib_helpers import AMBIENT

from falwrap import ConfigurationError, FalConfig, InvalidInputError
from falwrap.backends import open_store
from falwrap.backends.base import Store
from falwrap.contrib import celery as fal_celery
from falwrap.contrib.celery import FalTask, summary
from falwrap.journal import JobEntry, JobState
from falwrap.replay import hash_key
from falwrap.testing import FakeFal, Fault

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "celery_app"
SCHNELL = "fal-ai/flux/schnell"
RABBITMQ_URL = os.environ.get("FALWRAP_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

_T = TypeVar("_T")


def _until(probe: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll ``probe`` until it returns something other than ``None``; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


@attrs.define
class Worker:
    """A ``celery worker`` process (its own process group) and what it printed."""

    name: str
    proc: subprocess.Popen[str]
    _lines: list[str] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, line: str) -> None:
        """Keep one output line."""
        with self._lock:
            self._lines.append(line.rstrip("\n"))

    def output(self) -> str:
        """Everything printed so far."""
        with self._lock:
            return "\n".join(self._lines)

    def children(self) -> list[int]:
        """Pids of the pool's processes now."""
        return [child.pid for child in psutil.Process(self.proc.pid).children()]

    def kill(self) -> None:
        """SIGKILL the worker and its pool at once, as the OOM killer or a failed host would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def worker(env: Mapping[str, str], name: str, *, app: str = "contrib_celery_app:app", cwd: Path) -> Iterator[Worker]:
    """Run a one-process prefork worker until it says it is ready; SIGKILL it (and its pool) after."""
    base = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(cwd)])
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork", "--concurrency", "1",
        "--loglevel", "INFO", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=cwd, env={**base, "PYTHONPATH": pythonpath, "FALWRAP_ENV_FILE": "", **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    running = Worker(name, proc)
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [running.add(line) for line in proc.stdout or ()], daemon=True)
    reader.start()
    try:
        _until(
            lambda: True if " ready." in running.output() else None if proc.poll() is None else False,
            60, f"worker {name} ready",
        )  # fmt: skip
        if proc.poll() is not None:
            pytest.fail(f"worker {name} exited with {proc.returncode}:\n{running.output()}")
        yield running
    finally:
        running.kill()
        reader.join(timeout=5)
        proc.stdout.close()


@attrs.define
class Setup:
    """One test's broker, result backend, FakeFal and falwrap store."""

    fal: FakeFal
    env: dict[str, str]
    app: Celery
    store: Store
    cwd: Path

    def entry_for(self, task_id: str, endpoint: str = SCHNELL) -> JobEntry | None:
        """The journal's job for the first fal call of task ``task_id``, if any."""
        key = hash_key(task_id, endpoint)
        return next((e for e in self.store.journal.jobs() if e.idempotency_key == key), None)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _rabbitmq_ready() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            pass
    except OSError as exc:
        if _in_ci():
            pytest.fail(f"RabbitMQ at 127.0.0.1:5672 is not answering ({exc}) and CI=true requires it")
        pytest.skip(f"no RabbitMQ at 127.0.0.1:5672 ({exc}); start one to run the AMQP broker test")
    return RABBITMQ_URL


@pytest.fixture(params=["redis"])
def setup(request: pytest.FixtureRequest, redis_url: str, redis_client: Any, tmp_path: Path) -> Iterator[Setup]:
    """FakeFal, a Celery app on a unique queue and key prefix, and the falwrap store the workers share."""
    broker = _rabbitmq_ready() if request.param == "amqp" else redis_url
    prefix = f"falwrap-celery-test-{uuid.uuid4().hex[:12]}"
    with FakeFal(latency=0.05) as fal:
        env = {
            "FAL_KEY": fal.key, "FAL_BASE_URL": fal.url, "FALWRAP_STORE_URL": redis_url,
            "FALWRAP_TEST_BROKER": broker, "FALWRAP_TEST_BACKEND": redis_url, "FALWRAP_TEST_PREFIX": prefix,
        }  # fmt: skip
        config = FalConfig(api_key=fal.key, base_url=fal.url, store_url=redis_url)
        store = open_store(redis_url, namespace=config.key_fingerprint)
        app = make_app(env)
        try:
            yield Setup(fal, env, app, store, tmp_path)
        finally:
            if broker.startswith("amqp"):
                with app.connection_for_write() as conn:
                    conn.default_channel.queue_delete(prefix)
                    conn.default_channel.exchange_delete(prefix)
            app.close()
            store.close()
            for pattern in (f"{prefix}*", f"falwrap:{config.key_fingerprint}:*"):
                for key in redis_client.scan_iter(match=pattern, count=1000):
                    redis_client.delete(key)


def _running(s: Setup, task_id: str) -> JobEntry | None:
    entry = s.entry_for(task_id)
    return entry if entry is not None and entry.request_id is not None else None


def _assert_one_job_one_record(s: Setup, task_id: str, answer: Mapping[str, Any]) -> None:
    """FakeFal ran one job, the task's answer names it, the journal holds it once with one record."""
    assert s.fal.submissions == 1
    assert list(s.fal.jobs) == [answer["request_id"]]
    entry = s.entry_for(task_id)
    assert entry is not None
    assert entry.state is JobState.SUCCEEDED
    assert entry.request_id == answer["request_id"]
    assert [e.job_id for e in s.store.journal.jobs()] == [entry.job_id]
    assert [r.job_id for r in s.store.journal.records() if r.job_id is not None] == [entry.job_id]
    assert Decimal(answer["cost_usd"]) == entry.cost == s.fal.billed_total


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["redis", "amqp"], indirect=True)
def test_a_worker_killed_mid_job_is_redelivered_and_the_next_worker_follows_the_same_job(setup: Setup) -> None:
    """SIGKILL a worker while fal runs its job: another worker gets the task, follows that job, pays nothing more."""
    s = setup
    s.fal.set_latency(3.0, SCHNELL)
    env = {**s.env, "FALWRAP_TEST_VISIBILITY": "2"}
    with worker(env, f"a-{uuid.uuid4().hex[:6]}", cwd=s.cwd) as first:
        sent = s.app.send_task("falwrap_test.make_image", args=["a lighthouse", SCHNELL])
        running = _until(lambda: _running(s, sent.id), 25, "the first worker's job accepted by fal")
        first.kill()
    assert running.state is JobState.RUNNING
    with worker(env, f"b-{uuid.uuid4().hex[:6]}", cwd=s.cwd) as second:
        answer = sent.get(timeout=25, interval=0.1)
        assert sent.worker is not None
        assert sent.worker.startswith(second.name)
    assert answer["request_id"] == running.request_id
    _assert_one_job_one_record(s, sent.id, answer)


@pytest.mark.slow
def test_a_pool_process_killed_while_submitting_is_redelivered_and_fal_is_asked_before_resending(
    setup: Setup,
) -> None:
    """fal accepts the job but its answer never comes; the pool process dies: the retry finds the job at fal."""
    s = setup
    # fal takes the job and then says nothing: the journal only knows a submission was under way.
    s.fal.inject("submit", Fault.after(Fault.stall(60)))
    with worker(s.env, f"a-{uuid.uuid4().hex[:6]}", cwd=s.cwd) as only:
        sent = s.app.send_task("falwrap_test.make_image", args=["a harbour", SCHNELL])
        _until(lambda: s.fal.submissions or None, 25, "the submission at FakeFal")
        submitting = s.entry_for(sent.id)
        assert submitting is not None
        assert submitting.state is JobState.SUBMITTING
        (killed,) = only.children()
        os.kill(killed, signal.SIGKILL)
        # reject_on_worker_lost: the worker puts the task back and a new pool process runs it.
        answer = sent.get(timeout=25, interval=0.1)
        assert killed not in only.children()
    _assert_one_job_one_record(s, sent.id, answer)


@pytest.mark.slow
def test_a_rate_limit_wait_over_the_threshold_retries_the_task_and_frees_the_worker(setup: Setup) -> None:
    """The next slot is 5 s away, the task may wait 1 s: it is retried at its slot and the worker runs others."""
    s = setup
    env = {**s.env, "FAL_REQUESTS_PER_MINUTE": "12", "FAL_RATE_BURST": "1"}
    with worker(env, f"a-{uuid.uuid4().hex[:6]}", cwd=s.cwd) as only:
        # Take the shared limiter's slot: the worker's next one is 5 s away.
        assert s.store.rate_limiter(12.0, 1).try_acquire() == 0.0
        slot_taken = time.monotonic()
        hasty = s.app.send_task("falwrap_test.make_image_hasty", args=["a quay", SCHNELL])
        other = s.app.send_task("falwrap_test.pid")
        # The one pool process is free while the fal task waits for its slot.
        assert other.get(timeout=20, interval=0.1) in only.children()
        assert hasty.state == "RETRY"
        answer = hasty.get(timeout=28, interval=0.1)
    assert hasty.retries is not None
    assert hasty.retries >= 1
    (submitted_at,) = s.fal.submit_times
    assert submitted_at >= slot_taken + 4.5  # never before its slot: the deferral took nothing early
    assert answer["request_id"] in s.fal.jobs
    refused = [r for r in s.store.journal.records() if not r.success]
    assert refused
    assert {r.error_code for r in refused} == {"RATE_LIMIT_TIMEOUT"}
    assert all(r.cost_usd == 0 for r in refused)


def _forget_example_keys(redis_client: Any, queue: str, worker_name: str) -> None:
    """Delete what the example's worker (its keys are not prefixed) left in the test database."""
    redis_client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    pidbox = "_kombu.binding.celery.pidbox"
    for member in redis_client.smembers(pidbox):
        if f"{worker_name}@".encode() in member:
            redis_client.srem(pidbox, member)
    if not redis_client.exists(pidbox):
        redis_client.zrem("_kombu.binding_deadlines", "celery.pidbox")


@pytest.mark.slow
def test_the_example_project_runs_as_written_and_returns_a_json_summary(setup: Setup, redis_client: Any) -> None:
    """examples/celery_app: a worker and enqueue.py against FakeFal print a JSON summary of the paid job."""
    s = setup
    queue = s.env["FALWRAP_TEST_PREFIX"]
    env = {
        "FAL_KEY": s.fal.key, "FAL_BASE_URL": s.fal.url, "FALWRAP_STORE_URL": s.env["FALWRAP_STORE_URL"],
        "CELERY_BROKER_URL": s.env["FALWRAP_TEST_BACKEND"], "CELERY_QUEUE": queue,
    }  # fmt: skip
    name = f"example-{uuid.uuid4().hex[:6]}"
    try:
        with worker(env, name, app="tasks", cwd=EXAMPLE):
            base = {k: v for k, v in os.environ.items() if k not in AMBIENT}
            done = subprocess.run(
                [sys.executable, "enqueue.py", "a lighthouse at dusk"], cwd=EXAMPLE, capture_output=True,
                text=True, timeout=60, check=False,
                env={**base, "PYTHONPATH": str(ROOT), "FALWRAP_ENV_FILE": "", **env},
            )  # fmt: skip
    finally:
        _forget_example_keys(redis_client, queue, name)
    queued = re.search(r"queued task (\S+)", done.stderr)
    assert queued is not None, done.stderr
    redis_client.delete(f"celery-task-meta-{queued.group(1)}")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"request_id", "model", "cost_usd", "urls", "state"}
    assert answer["model"] == SCHNELL
    assert answer["state"] == "succeeded"
    assert list(s.fal.jobs) == [answer["request_id"]]
    assert Decimal(answer["cost_usd"]) == s.fal.billed_total > 0
    (url,) = answer["urls"]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("image/")


# --- in one process: keys, summaries, configuration, fork ---------------------------------------------


@pytest.fixture
def local_app(fake_fal: FakeFal) -> Iterator[Celery]:
    """An in-process Celery app (tasks run with ``apply``) whose falwrap client points at ``fake_fal``."""
    fal_celery.configure(FalConfig(api_key=fake_fal.key, base_url=fake_fal.url))
    app = Celery("falwrap_local", set_as_current=False)
    try:
        yield app
    finally:
        app.close()
        fal_celery.configure(None)


def test_the_same_task_id_returns_the_first_job_and_each_call_in_a_run_has_its_own_key(
    local_app: Celery, fake_fal: FakeFal
) -> None:
    """A task run again under its id submits nothing; its two calls are two jobs, each found again."""

    @local_app.task(base=FalTask, bind=True)
    def two_images(self: FalTask) -> list[str]:
        return [self.fal.image(prompt, model=SCHNELL).request_id for prompt in ("a cat", "a dog")]

    first = two_images.apply(task_id="task-42").get()
    again = two_images.apply(task_id="task-42").get()
    other = two_images.apply(task_id="task-43").get()
    assert again == first
    assert len(set(first)) == 2
    assert set(other).isdisjoint(first)
    assert fake_fal.submissions == 4


def test_a_task_returning_an_image_result_returns_its_json_summary(local_app: Celery, fake_fal: FakeFal) -> None:
    """The task's return value is the small summary, and it survives json.dumps unchanged."""

    @local_app.task(base=FalTask, bind=True)
    def one_image(self: FalTask) -> object:
        return self.fal.image("a boat", model=SCHNELL, num_images=2)

    answer = one_image.apply(task_id="task-7").get()
    assert json.loads(json.dumps(answer)) == answer
    assert answer["request_id"] in fake_fal.jobs
    assert len(answer["urls"]) == 2
    assert Decimal(answer["cost_usd"]) == fake_fal.billed_total


def test_a_video_result_summary_names_the_clip(fake_fal: FakeFal) -> None:
    """summary() of a VideoResult holds the clip's URL and the exact cost as a string."""
    from falwrap import FalClient

    with FalClient(FalConfig(api_key=fake_fal.key, base_url=fake_fal.url)) as client:
        result = client.video("waves", model="fal-ai/kling-video/v1/standard/text-to-video", duration=5)
    answer = summary(result)
    assert answer["urls"] == [result.video.url]
    assert answer["cost_usd"] == str(result.cost_usd)
    assert json.loads(json.dumps(answer)) == answer


def test_summary_refuses_anything_but_a_result() -> None:
    """summary() of a plain dict is an InvalidInputError naming ``result``."""
    with pytest.raises(InvalidInputError, match="result") as caught:
        summary({"request_id": "x"})  # type: ignore[arg-type]
    assert caught.value.field == "result"


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("fal_max_wait", float("nan")), ("fal_max_wait", -1), ("fal_max_deferrals", -1), ("fal_max_deferrals", 2.5)],
)
def test_invalid_task_settings_are_refused_before_anything_is_sent(
    local_app: Celery, fake_fal: FakeFal, attribute: str, value: object
) -> None:
    """A bad ``fal_max_wait`` or ``fal_max_deferrals`` is a ConfigurationError naming it; FakeFal sees nothing."""

    @local_app.task(base=FalTask, bind=True, **{attribute: value})
    def bad(self: FalTask) -> object:
        return self.fal.image("a cat", model=SCHNELL)

    with pytest.raises(ConfigurationError, match=attribute) as caught:
        bad()
    assert caught.value.variable == attribute
    assert fake_fal.counters["submit"] == 0


def test_an_explicit_idempotency_key_is_refused(local_app: Celery, fake_fal: FakeFal) -> None:
    """The task id is the key: passing another one is an InvalidInputError naming ``idempotency_key``."""

    @local_app.task(base=FalTask, bind=True)
    def keyed(self: FalTask) -> object:
        return self.fal.image("a cat", model=SCHNELL, idempotency_key="mine")

    with pytest.raises(InvalidInputError) as caught:
        keyed.apply(task_id="task-9").get()
    assert caught.value.field == "idempotency_key"
    assert fake_fal.counters["submit"] == 0


def test_called_directly_or_eagerly_a_task_waits_for_the_limiter_instead_of_retrying(fake_fal: FakeFal) -> None:
    """Outside a worker there is no slot to free: a wait over ``fal_max_wait`` is waited out, not retried."""
    from falwrap import RateLimitConfig

    rate = RateLimitConfig(requests_per_minute=60, burst=1)
    fal_celery.configure(FalConfig(api_key=fake_fal.key, base_url=fake_fal.url, rate_limit=rate))
    app = Celery("falwrap_direct", set_as_current=False)
    try:

        @app.task(base=FalTask, bind=True, fal_max_wait=0.1)
        def hasty(self: FalTask) -> object:
            return self.fal.image("a cat", model=SCHNELL)

        hasty()
        started = time.monotonic()
        direct = hasty()
        eager = hasty.apply(task_id="task-eager").get()
        assert time.monotonic() - started >= 1.5  # two slots 1 s apart, waited for
        assert direct["request_id"] != eager["request_id"]
        assert fake_fal.submissions == 3
    finally:
        app.close()
        fal_celery.configure(None)


def test_configure_refuses_what_is_not_a_config() -> None:
    """configure() with a dict is a ConfigurationError naming ``config``."""
    with pytest.raises(ConfigurationError) as caught:
        fal_celery.configure({"FAL_KEY": "x"})  # type: ignore[arg-type]
    assert caught.value.variable == "config"


def _child_uses_its_own_client(inherited: int, out: Any) -> None:
    client = fal_celery.get_client()
    result = client.image("a forked cat", model=SCHNELL)
    out.send((id(client) != inherited, result.request_id))


def test_a_forked_child_builds_its_own_client_and_leaves_the_parents_usable(fake_fal: FakeFal) -> None:
    """After fork (Celery's prefork pool) the child gets a new client; the parent's still works afterwards."""
    fal_celery.configure(FalConfig(api_key=fake_fal.key, base_url=fake_fal.url))
    try:
        parent = fal_celery.get_client()
        assert fal_celery.get_client() is parent
        parent.image("a parent cat", model=SCHNELL)
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_child_uses_its_own_client, args=(id(parent), send))
        child.start()
        assert receive.poll(30)
        own_client, request_id = receive.recv()
        child.join(timeout=30)
        assert child.exitcode == 0
        assert own_client
        assert request_id in fake_fal.jobs
        assert parent.image("a parent cat again", model=SCHNELL).request_id in fake_fal.jobs
        assert fake_fal.submissions == 3
    finally:
        fal_celery.configure(None)
