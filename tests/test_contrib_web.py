"""The framework-neutral web pieces: error mapping, job stores, settings merging, worker detection."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from contrib_helpers import clear_ambient

from falwrap import (
    AmbiguousSubmissionError,
    AuthenticationError,
    BackendUnavailableError,
    BudgetExceededError,
    ConfigurationError,
    FalClient,
    FalConfig,
    FalTimeoutError,
    InvalidInputError,
    InvalidRequestError,
    ModelError,
    NoModelError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
)
from falwrap.backends import open_store
from falwrap.contrib._common import config_from_settings, likely_workers, merged_values, stats_report
from falwrap.contrib.web import (
    MemoryJobStore,
    RedisJobStore,
    error_response,
    job_store_for,
    jsonable,
    valid_request_id,
)
from falwrap.results import JobHandle

BUDGET = BudgetExceededError(
    spent=Decimal("9.5"), reserved=Decimal("0.4"), estimate=Decimal("0.2"), budget=Decimal(10), model_id="m"
)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BUDGET, 429, "BUDGET_EXCEEDED"),
        (InvalidInputError("num_images: 9 is out of range", field="num_images"), 400, "INVALID_INPUT"),
        (InvalidRequestError("fal refused", details=[{"loc": ["body", "x"]}]), 422, "INVALID_INPUT"),
        (PaymentRequiredError("top up"), 402, "PAYMENT_REQUIRED"),
        (NotFoundError("no such request"), 404, "NOT_FOUND"),
        (RateLimitError("slow down", retry_after=2.5), 503, "RATE_LIMIT"),
        (RateLimitTimeout("limiter busy", wait=4.2), 503, "RATE_LIMIT_TIMEOUT"),
        (FalTimeoutError("too slow", request_id="r1"), 504, "TIMEOUT"),
        (ModelError("nsfw", error_code="content_policy_violation"), 502, "content_policy_violation"),
        (ServerError("fal is down"), 502, "SERVICE_UNAVAILABLE"),
        (AuthenticationError("bad key"), 500, "UNAUTHORIZED"),
        (ConfigurationError("no key", variable="FAL_KEY"), 500, "CONFIGURATION"),
        (BackendUnavailableError("redis is down"), 503, "BACKEND_UNAVAILABLE"),
        (AmbiguousSubmissionError("lost answer"), 502, "AMBIGUOUS_SUBMISSION"),
        (NoModelError("nothing fits"), 400, "NO_MODEL"),
    ],
)
def test_every_error_maps_to_its_status_and_keeps_the_friendly_message(error: Any, status: int, code: str) -> None:
    """Each falwrap error gets its documented status and code, and the body carries str(error)."""
    mapped = error_response(error)
    assert mapped.status == status
    assert mapped.body["error"]["code"] == code
    assert mapped.body["error"]["message"] == str(error)
    assert mapped.body["error"]["type"] == type(error).__name__
    json.dumps(mapped.body)


def test_budget_error_retry_after_counts_to_utc_midnight() -> None:
    """A spent budget says Retry-After until 00:00 UTC, and carries budget and spend as strings."""
    mapped = error_response(BUDGET, now=datetime(2026, 11, 25, 23, 59, 30, tzinfo=timezone.utc))
    assert mapped.headers == {"Retry-After": "30"}
    assert mapped.body["error"]["budget_usd"] == "10"
    assert mapped.body["error"]["spent_usd"] == "9.5"


def test_retry_after_is_a_whole_number_of_seconds_rounded_up() -> None:
    """fal's Retry-After of 2.5 s and a limiter wait of 4.2 s become 3 and 5."""
    assert error_response(RateLimitError("x", retry_after=2.5)).headers == {"Retry-After": "3"}
    assert error_response(RateLimitTimeout("x", wait=4.2)).headers == {"Retry-After": "5"}


def test_fal_details_and_request_id_are_passed_on() -> None:
    """fal's field-level details and the request id appear in the body."""
    body = error_response(InvalidRequestError("bad", details=[{"loc": ["body", "seed"]}], request_id="r9")).body
    assert body["error"]["details"] == [{"loc": ["body", "seed"]}]
    assert body["error"]["request_id"] == "r9"


def test_jsonable_keeps_money_exact_and_dates_readable() -> None:
    """Decimals become exact strings, datetimes ISO strings, tuples lists, non-finite floats null."""
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = {"cost": Decimal("0.003000"), "at": moment, "xs": (1, 2.5), "nan": float("nan")}
    assert jsonable(value) == {"cost": "0.003000", "at": "2026-01-02T03:04:05+00:00", "xs": [1, 2.5], "nan": None}


@pytest.mark.parametrize(
    ("request_id", "ok"),
    [("9f0c6c1e-2d1a-4a8e-9c4e-1b2c3d4e5f60", True), ("abc_DEF-1", True), ("", False), ("../x", False),
     ("a b", False), ("x" * 129, False)],
)  # fmt: skip
def test_request_ids_from_urls_are_checked(request_id: str, ok: bool) -> None:
    """Only fal-like ids (letters, digits, - and _, at most 128) are looked up."""
    assert valid_request_id(request_id) is ok


def _handle(rid: str) -> JobHandle:
    base = f"http://127.0.0.1:1/fal-ai/flux/requests/{rid}"
    return JobHandle(
        request_id=rid, model_id="fal-ai/flux/schnell", status_url=f"{base}/status", response_url=base,
        cancel_url=f"{base}/cancel", submitted_at=datetime.now(timezone.utc), estimate_usd=Decimal("0.003"),
    )  # fmt: skip


@contextlib.contextmanager
def _deprecated_stores() -> Iterator[None]:
    """Build the deprecated stores without their once-per-process warning (tested on its own below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def test_memory_store_round_trips_and_forgets_the_oldest_beyond_its_size() -> None:
    """MemoryJobStore keeps handles and final reports, and drops the oldest job past max_jobs."""
    with _deprecated_stores():
        store = MemoryJobStore(max_jobs=2)
    handles = {rid: _handle(rid) for rid in ("a", "b", "c")}
    for handle in handles.values():
        store.save(handle)
    assert store.load("a") is None
    assert store.load("c") == handles["c"]
    assert store.finished("b") is None
    store.finish("b", {"status": "COMPLETED"})
    assert store.finished("b") == {"status": "COMPLETED"}
    store.finish("zzz", {"status": "COMPLETED"})
    assert store.finished("zzz") is None


def test_memory_store_is_safe_under_concurrent_writers() -> None:
    """Eight threads saving 500 handles each leave exactly max_jobs entries and no error."""
    with _deprecated_stores():
        store = MemoryJobStore(max_jobs=1000)

    def save(t: int) -> None:
        for i in range(500):
            store.save(_handle(f"t{t}-{i}"))

    threads = [threading.Thread(target=save, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(store.load(f"t{t}-{i}") is not None for t in range(8) for i in range(500)) == 1000


@pytest.mark.redis
def test_redis_store_shares_handles_between_instances_with_a_ttl(redis_client: Any, redis_namespace: str) -> None:
    """A handle saved through one RedisJobStore is read by another (another worker), with its TTL set."""
    with _deprecated_stores():
        writer = RedisJobStore(redis_client, f"{redis_namespace}:jobs", ttl=60)
        reader = RedisJobStore(redis_client, f"{redis_namespace}:jobs")
    rid = uuid.uuid4().hex
    writer.save(_handle(rid))
    loaded = reader.load(rid)
    assert loaded is not None
    assert loaded.to_dict() == _handle(rid).to_dict() | {"submitted_at": loaded.submitted_at.isoformat()}
    assert loaded.estimate_usd == Decimal("0.003")
    assert 0 < redis_client.ttl(f"{redis_namespace}:jobs:{rid}") <= 60
    writer.finish(rid, {"status": "COMPLETED", "cost": Decimal("0.003")})
    assert reader.finished(rid) == {"status": "COMPLETED", "cost": "0.003"}
    assert reader.load("missing") is None


def test_the_hand_built_stores_warn_once_per_process_and_the_journal_store_never() -> None:
    """MemoryJobStore and RedisJobStore each raise one DeprecationWarning per process; job_store_for(client) none."""
    code = (
        "import warnings\n"
        "from falwrap import FalClient, FalConfig\n"
        "from falwrap.contrib.web import MemoryJobStore, RedisJobStore, job_store_for\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    with FalClient(FalConfig(api_key='k')) as client:\n"
        "        job_store_for(client)\n"
        "    MemoryJobStore(); MemoryJobStore()\n"
        "    RedisJobStore(None, 'p'); RedisJobStore(None, 'p')\n"
        "    legacy = job_store_for(FalConfig(api_key='k'))\n"
        "assert type(legacy) is MemoryJobStore, legacy\n"
        "print(sorted(str(w.message).split()[0] for w in caught if w.category is DeprecationWarning))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MemoryJobStore', 'RedisJobStore']"


def test_job_store_for_names_what_it_was_given_wrong() -> None:
    """Something that is neither a client nor a config, or store= beside a client, is an InvalidInputError."""
    with pytest.raises(InvalidInputError, match=r"expected a FalClient .* got str") as info:
        job_store_for("redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert info.value.field == "source"
    with FalClient(FalConfig(api_key="k")) as client:
        other = open_store("memory:", namespace="elsewhere")
        with pytest.raises(InvalidInputError, match="store= goes with a FalConfig") as info:
            job_store_for(client, store=other)
        assert info.value.field == "store"


def test_settings_override_environment_and_env_file(tmp_path: Path) -> None:
    """Framework settings beat the environment, which beats the .env file; None and "" mean unset."""
    env_file = tmp_path / ".env"
    env_file.write_text("FAL_MAX_RETRIES=1\nFAL_RATE_BURST=3\nFAL_KEY=from-file\n")
    environ = {"FAL_MAX_RETRIES": "2", "FAL_KEY": "from-env"}
    values = merged_values(
        {"FAL_KEY": None, "FAL_REQUESTS_PER_MINUTE": 600, "FAL_MAX_CONCURRENT": "", "FALWRAP_LIVE_PRICING": False},
        environ=environ,
        env_file=env_file,
    )
    assert values["FAL_KEY"] == "from-env"
    assert values["FAL_MAX_RETRIES"] == "2"
    assert values["FAL_RATE_BURST"] == "3"
    assert values["FAL_REQUESTS_PER_MINUTE"] == "600"
    assert values["FALWRAP_LIVE_PRICING"] == "false"
    assert "FAL_MAX_CONCURRENT" not in values


def test_a_setting_of_the_wrong_type_is_a_configuration_error_naming_it() -> None:
    """A list where a number belongs raises ConfigurationError naming the setting, not showing the value."""
    with pytest.raises(ConfigurationError, match="FAL_KEY must be a string") as info:
        config_from_settings({"FAL_KEY": ["secret-value"]}, environ={}, env_file=None)
    assert "secret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        ({}, ["python"], 1),
        ({"WEB_CONCURRENCY": "3"}, ["python"], 3),
        ({"GUNICORN_CMD_ARGS": "-w 5 --threads 2"}, ["python"], 5),
        ({"GUNICORN_CMD_ARGS": "--workers=6"}, ["python"], 6),
        ({}, ["/venv/bin/gunicorn", "app:app", "-w4"], 4),
        ({"WEB_CONCURRENCY": "8", "FALWRAP_WORKERS": "1"}, ["python"], 1),
        ({"GUNICORN_CMD_ARGS": "--bind 'unbalanced"}, ["python"], 1),
    ],
)
def test_worker_count_is_guessed_from_hint_gunicorn_and_web_concurrency(
    environ: dict[str, str], argv: list[str], expected: int
) -> None:
    """FALWRAP_WORKERS wins, then gunicorn's -w (env or command line), then WEB_CONCURRENCY; default 1."""
    assert likely_workers(environ=environ, argv=argv) == expected


def test_stats_report_is_readable_and_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI table shows calls, spend, budget, per-model rows and whether the ledger is shared."""
    clear_ambient(monkeypatch)
    stats = {
        "total_calls": 3, "successes": 2, "failures": 1, "success_rate": 2 / 3,
        "total_cost_usd": Decimal("0.006"), "avg_duration_ms": 812.4, "p50_duration_ms": 800.0,
        "p95_duration_ms": None,
        "by_model": {"fal-ai/flux/schnell": {"total_calls": 3, "total_cost_usd": Decimal("0.006")}},
    }  # fmt: skip
    text = stats_report(stats, daily_cost=Decimal("0.006"), budget=Decimal(1), shared=True)
    assert "calls:              3 (2 ok, 1 failed, 66.7% success)" in text
    assert "spent today (UTC):  $0.006   daily budget: $1" in text
    assert "avg 812  p50 800  p95 -" in text
    assert "fal-ai/flux/schnell  calls     3  cost $0.006" in text
    assert "all processes" in text


def test_env_file_location_comes_from_the_framework_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """FALWRAP_ENV_FILE: the framework's value wins (None or "" = no file), else the environment's, else .env."""
    from falwrap.contrib._common import env_file_setting

    monkeypatch.delenv("FALWRAP_ENV_FILE", raising=False)
    assert env_file_setting(...) == ".env"
    monkeypatch.setenv("FALWRAP_ENV_FILE", "/etc/app/fal.env")
    assert env_file_setting(...) == "/etc/app/fal.env"
    assert env_file_setting("local.env") == "local.env"
    assert env_file_setting(None) is None
    assert env_file_setting("") is None
