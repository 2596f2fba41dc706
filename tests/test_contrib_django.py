"""The Django integration through Django's real test client, against FakeFal over HTTP.

Django is configured here with the example project's settings
(``examples/django_app/demo_django/settings.py``) through ``settings.configure``,
so no DJANGO_SETTINGS_MODULE leaks into the rest of the suite.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import contrib_django_setup  # noqa: F401  (configures Django before the imports below)
import pytest
from contrib_helpers import clear_ambient
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from falwrap import ConfigurationError, FalClient
from falwrap.catalog import MODEL_CATALOG, estimate_cost
from falwrap.contrib import django as fw_django
from falwrap.testing import FakeFal, JobFailure

SCHNELL = "fal-ai/flux/schnell"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """A FakeFal with short jobs."""
    with FakeFal(latency=0.05) as server:
        yield server


@pytest.fixture
def configured(settings: Any, fal: FakeFal, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """settings.FALWRAP pointing at FakeFal, with no ambient FAL_* variables or .env file."""
    clear_ambient(monkeypatch)
    settings.FALWRAP_ENV_FILE = None
    settings.FALWRAP = {"FAL_KEY": fal.key, "FAL_BASE_URL": fal.url, "FAL_REQUESTS_PER_MINUTE": 60_000}
    yield settings
    fw_django.reset()


@pytest.fixture
def web() -> Client:
    """Django's test client."""
    return Client()


def _ids(messages: list[checks.CheckMessage]) -> list[str]:
    return sorted(m.id for m in messages if m.id and m.id.startswith("falwrap."))


# --- the shared client --------------------------------------------------------------------------------


def test_get_client_is_one_instance_shared_by_concurrent_threads(configured: Any, fal: FakeFal) -> None:
    """Sixteen threads racing on the first get_client() all receive the same client, built from settings."""
    barrier = threading.Barrier(16)
    seen: list[FalClient] = []

    def grab() -> None:
        barrier.wait()
        seen.append(fw_django.get_client())

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 16
    assert len({id(c) for c in seen}) == 1
    assert seen[0].config.base_url == fal.url
    assert seen[0].config.rate_limit.requests_per_minute == 60_000


def test_settings_win_over_environment_which_fills_the_gaps(
    configured: Any, fal: FakeFal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name in settings.FALWRAP beats the environment; a name left out is read from the environment."""
    monkeypatch.setenv("FAL_REQUESTS_PER_MINUTE", "60")
    monkeypatch.setenv("FAL_MAX_RETRIES", "7")
    config = fw_django.get_client().config
    assert config.rate_limit.requests_per_minute == 60_000
    assert config.retry.max_retries == 7


def test_env_file_is_the_last_fallback(configured: Any, fal: FakeFal, tmp_path: Path) -> None:
    """FALWRAP_ENV_FILE names a .env file read beneath settings and the environment."""
    env_file = tmp_path / ".env"
    env_file.write_text("FAL_DAILY_BUDGET_USD=3.50\nFAL_REQUESTS_PER_MINUTE=1\n")
    configured.FALWRAP_ENV_FILE = str(env_file)
    config = fw_django.get_client().config
    assert config.daily_budget_usd == Decimal("3.50")
    assert config.rate_limit.requests_per_minute == 60_000


def test_setting_changed_drops_the_client_and_the_next_one_uses_new_settings(configured: Any, fal: FakeFal) -> None:
    """Overriding settings.FALWRAP (setting_changed) replaces the shared client with one built from the new values."""
    first = fw_django.get_client()
    configured.FALWRAP = {**configured.FALWRAP, "FAL_DAILY_BUDGET_USD": "1.25"}
    second = fw_django.get_client()
    assert second is not first
    assert first.config.daily_budget_usd is None
    assert second.config.daily_budget_usd == Decimal("1.25")


def test_missing_key_makes_get_client_raise_naming_fal_key(configured: Any) -> None:
    """Without a key anywhere get_client() raises ConfigurationError naming FAL_KEY."""
    configured.FALWRAP = {}
    with pytest.raises(ConfigurationError, match="FAL_KEY"):
        fw_django.get_client()


# --- the example views --------------------------------------------------------------------------------


def test_image_view_returns_request_id_and_exact_cost(configured: Any, fal: FakeFal, web: Client) -> None:
    """POST /image runs one job at FakeFal and answers with its request id and cost."""
    response = web.post("/image", {"prompt": "a lighthouse"}, content_type="application/json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["request_id"] in fal.jobs
    assert data["model"] == SCHNELL
    assert Decimal(data["cost_usd"]) == estimate_cost(MODEL_CATALOG[SCHNELL], {"prompt": "a lighthouse"})
    assert data["images"][0]["url"].startswith(fal.url)
    assert fal.submissions == 1
    assert fw_django.get_client().stats()["total_calls"] == 1


def test_submit_answers_202_at_once_and_polling_returns_the_result(configured: Any, fal: FakeFal, web: Client) -> None:
    """POST /jobs returns 202 before the job ends; GET /jobs/<id> says 202 while it runs, then 200 with the result."""
    fal.set_latency(2.0)
    started = time.monotonic()
    response = web.post("/jobs", {"prompt": "a slow one"}, content_type="application/json")
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.content
    accepted = response.json()
    assert elapsed < 2.0  # shorter than the job: the request thread did not wait for it
    assert accepted["status"] == "IN_QUEUE"
    assert accepted["status_url"] == f"/jobs/{accepted['request_id']}" == response["Location"]
    assert fal.url not in json.dumps(accepted)  # fal's URLs (used with the key) stay on the server

    running = web.get(accepted["status_url"])
    assert running.status_code == 202
    assert running.json()["status"] in {"IN_QUEUE", "IN_PROGRESS"}

    deadline = time.monotonic() + 10
    while (polled := web.get(accepted["status_url"])).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert polled.status_code == 200
    done = polled.json()
    assert done["status"] == "COMPLETED"
    assert done["result"]["images"][0]["url"].startswith(fal.url)
    assert fw_django.get_client().stats()["total_calls"] == 1

    results_fetched = fal.counters["result"]
    again = web.get(accepted["status_url"])
    assert again.json() == done
    assert fal.counters["result"] == results_fetched  # the finished report is kept, fal is not asked again
    assert fw_django.get_client().stats()["total_calls"] == 1
    assert fal.submissions == 1


def test_failed_job_is_reported_as_failed_with_the_friendly_message(configured: Any, fal: FakeFal, web: Client) -> None:
    """A job that fails at fal polls as 200 FAILED with the typed error's code and message."""
    fal.fail_next_jobs(1, JobFailure("content_policy_violation", detail="flagged by the safety checker"))
    accepted = web.post("/jobs", {"prompt": "x"}, content_type="application/json").json()
    deadline = time.monotonic() + 10
    while (polled := web.get(accepted["status_url"])).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    report = polled.json()
    assert polled.status_code == 200
    assert report["status"] == "FAILED"
    assert report["error"]["code"] == "content_policy_violation"
    assert report["error"]["message"]
    assert fw_django.get_client().stats()["failures"] == 1


def test_unknown_or_malformed_job_id_is_404_without_asking_fal(configured: Any, fal: FakeFal, web: Client) -> None:
    """Polling an id this server never issued answers 404 JSON and sends nothing to fal."""
    for job_id in ("00000000-0000-0000-0000-000000000000", "bad$id!"):
        response = web.get(f"/jobs/{job_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "UNKNOWN_JOB"
    assert fal.counters["status"] == 0


@pytest.mark.parametrize("path", ["/image", "/jobs"])
def test_spent_budget_is_a_429_json_answer_with_the_friendly_message(
    configured: Any, fal: FakeFal, web: Client, path: str
) -> None:
    """A budget below one image's cost: both views answer 429 BUDGET_EXCEEDED, Retry-After set, nothing submitted."""
    configured.FALWRAP = {**configured.FALWRAP, "FAL_DAILY_BUDGET_USD": "0.001"}
    response = web.post(path, {"prompt": "x"}, content_type="application/json")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "BUDGET_EXCEEDED"
    assert "Daily budget of $0.001" in error["message"]
    assert "FAL_DAILY_BUDGET_USD" in error["message"]
    assert 0 < int(response["Retry-After"]) <= 86_400
    assert fal.submissions == 0


def test_invalid_input_is_a_400_json_answer_and_nothing_is_sent(configured: Any, fal: FakeFal, web: Client) -> None:
    """An out-of-range size is refused locally: 400 with the field named, no submission."""
    response = web.post("/image", {"prompt": "x", "size": "13x13"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_INPUT"
    assert fal.counters["submit"] == 0


def test_stats_view_reports_the_ledger(configured: Any, fal: FakeFal, web: Client) -> None:
    """GET /stats shows the calls and today's spend of the shared client."""
    for _ in range(2):
        assert web.post("/image", {"prompt": "x"}, content_type="application/json").status_code == 200
    data = web.get("/stats").json()
    assert data["stats"]["total_calls"] == 2
    assert Decimal(data["daily_cost_usd"]) == 2 * estimate_cost(MODEL_CATALOG[SCHNELL], {"prompt": "x"})
    assert data["shared"] is False


# --- management command ----------------------------------------------------------------------------------


def test_falwrap_stats_command_prints_calls_and_spend_never_the_key(configured: Any, fal: FakeFal, web: Client) -> None:
    """manage.py falwrap_stats prints the table and --json the numbers; the key appears in neither."""
    assert web.post("/image", {"prompt": "x"}, content_type="application/json").status_code == 200
    table, raw = io.StringIO(), io.StringIO()
    call_command("falwrap_stats", stdout=table)
    call_command("falwrap_stats", "--json", stdout=raw)
    assert "calls:              1 (1 ok, 0 failed" in table.getvalue()
    assert SCHNELL in table.getvalue()
    data = json.loads(raw.getvalue())
    assert data["stats"]["total_calls"] == 1
    assert Decimal(data["daily_cost_usd"]) == Decimal("0.003")
    for text in (table.getvalue(), raw.getvalue()):
        assert fal.key not in text
        assert fal.key.split(":")[1] not in text


def test_falwrap_stats_command_without_key_fails_with_command_error(configured: Any) -> None:
    """Without a key the command stops with a CommandError naming FAL_KEY."""
    configured.FALWRAP = {}
    with pytest.raises(CommandError, match="FAL_KEY"):
        call_command("falwrap_stats", stdout=io.StringIO())


# --- system checks ---------------------------------------------------------------------------------------


def test_checks_are_silent_for_a_good_configuration(configured: Any) -> None:
    """A key, valid values and one worker: no falwrap.* message."""
    assert _ids(checks.run_checks()) == []


def test_missing_key_is_error_e001_with_a_hint(configured: Any) -> None:
    """No key in settings, environment or .env: Error falwrap.E001 whose hint says where to put FAL_KEY."""
    configured.FALWRAP = {"FAL_REQUESTS_PER_MINUTE": 600}
    messages = [m for m in checks.run_checks() if m.id == "falwrap.E001"]
    assert len(messages) == 1
    assert messages[0].level == checks.ERROR
    assert "FAL_KEY" in messages[0].hint
    assert ".env" in messages[0].hint


def test_key_in_environment_satisfies_the_check(configured: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAL_KEY_ID plus FAL_KEY_SECRET in the environment count as a key: no E001."""
    configured.FALWRAP = {}
    monkeypatch.setenv("FAL_KEY_ID", "id")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret")
    assert "falwrap.E001" not in _ids(checks.run_checks())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FAL_REQUESTS_PER_MINUTE", "fast"),
        ("FAL_DAILY_BUDGET_USD", "-5"),
        ("FALWRAP_REDIS_URL", "http://127.0.0.1:6379"),
        ("FAL_TIMEOUT_IMAGE", 0),
        ("FAL_MAX_RETRIES", ["3"]),
    ],
)
def test_invalid_value_is_error_e002_naming_it(configured: Any, name: str, value: object) -> None:
    """Each invalid value gives Error falwrap.E002 whose message names the setting."""
    configured.FALWRAP = {**configured.FALWRAP, name: value}
    messages = [m for m in checks.run_checks() if m.id == "falwrap.E002"]
    assert len(messages) == 1
    assert name in messages[0].msg
    assert messages[0].level == checks.ERROR


def test_falwrap_setting_that_is_not_a_dict_is_e002(configured: Any) -> None:
    """settings.FALWRAP = "..." (not a dict) is Error falwrap.E002."""
    configured.FALWRAP = "FAL_KEY=abc"
    assert _ids(checks.run_checks()) == ["falwrap.E002"]


def test_unknown_name_is_warning_w002(configured: Any) -> None:
    """A typo in settings.FALWRAP is reported as Warning falwrap.W002 naming it."""
    configured.FALWRAP = {**configured.FALWRAP, "FAL_REQUEST_PER_MINUTE": 10}
    messages = [m for m in checks.run_checks() if m.id == "falwrap.W002"]
    assert len(messages) == 1
    assert "FAL_REQUEST_PER_MINUTE" in messages[0].msg


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WEB_CONCURRENCY", "4"), ("GUNICORN_CMD_ARGS", "--bind 0.0.0.0:80 --workers 3"), ("FALWRAP_WORKERS", "2")],
)
def test_several_workers_without_redis_is_warning_w001(
    configured: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Several workers likely and limits in-process: Warning falwrap.W001 recommending FALWRAP_STORE_URL."""
    monkeypatch.setenv(variable, value)
    messages = [m for m in checks.run_checks() if m.id == "falwrap.W001"]
    assert len(messages) == 1
    assert messages[0].level == checks.WARNING
    assert "FALWRAP_STORE_URL" in messages[0].hint


def test_several_workers_with_redis_or_explicit_single_worker_is_silent(
    configured: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a shared store (not contacted by the check), or FALWRAP_WORKERS=1, there is no W001."""
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    base = dict(configured.FALWRAP)
    for name, url in (("FALWRAP_REDIS_URL", "redis://127.0.0.1:1/0"), ("FALWRAP_STORE_URL", "redis://127.0.0.1:1/0")):
        configured.FALWRAP = {**base, name: url}
        assert "falwrap.W001" not in _ids(checks.run_checks())
    configured.FALWRAP = base
    configured.FALWRAP = {**configured.FALWRAP, "FALWRAP_WORKERS": 1}
    assert "falwrap.W001" not in _ids(checks.run_checks())


def test_status_stream_setting_is_known_and_honoured(configured: Any) -> None:
    """FALWRAP_STATUS_STREAM in settings.FALWRAP draws no unknown-name warning and turns the stream off."""
    configured.FALWRAP = {**configured.FALWRAP, "FALWRAP_STATUS_STREAM": False}
    assert "falwrap.W002" not in _ids(checks.run_checks())
    assert fw_django.get_client().config.status_stream is False


def test_env_file_named_inside_falwrap_is_read(configured: Any, tmp_path: Path) -> None:
    """FALWRAP["FALWRAP_ENV_FILE"] names the dotenv file, like settings.FALWRAP_ENV_FILE does."""
    env_file = tmp_path / "fal.env"
    env_file.write_text("FAL_MAX_RETRIES=9\n")
    configured.FALWRAP = {**configured.FALWRAP, "FALWRAP_ENV_FILE": str(env_file)}
    assert fw_django.get_config().retry.max_retries == 9


def test_a_worker_count_that_is_not_a_number_is_e002(configured: Any) -> None:
    """FALWRAP_WORKERS="many" is Error falwrap.E002 naming it, not a hint silently ignored."""
    configured.FALWRAP = {**configured.FALWRAP, "FALWRAP_WORKERS": "many"}
    messages = [m for m in checks.run_checks() if m.id == "falwrap.E002"]
    assert len(messages) == 1
    assert "FALWRAP_WORKERS" in messages[0].msg


def test_job_store_first_in_a_fresh_process_does_not_deadlock(configured: Any) -> None:
    """get_job_store() before any get_client() returns (it used to wait for ever on the client's lock)."""
    fw_django.reset()
    found: list[Any] = []
    worker = threading.Thread(target=lambda: found.append(fw_django.get_job_store()), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "get_job_store() deadlocked"
    assert found and found[0] is fw_django.get_job_store()
    assert fw_django.get_client() is fw_django.get_client()


def test_check_messages_never_contain_the_key(configured: Any, fal: FakeFal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with an invalid value next to it, no check message or hint shows the key."""
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    configured.FALWRAP = {**configured.FALWRAP, "FAL_BASE_URL": "ftp://nowhere"}
    text = " ".join(f"{m.msg} {m.hint}" for m in checks.run_checks())
    assert "FAL_BASE_URL" in text
    assert fal.key.split(":")[1] not in text
