"""The Flask extension through Flask's real test client and CLI runner, against FakeFal over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from contrib_helpers import add_example_paths, clear_ambient
from flask import Flask
from flask.testing import FlaskClient

from falwrap import BudgetExceededError, ConfigurationError, FalClient
from falwrap.catalog import MODEL_CATALOG, estimate_cost
from falwrap.contrib.flask import FalWrap, get_client, get_job_store
from falwrap.contrib.web import JournalJobStore
from falwrap.testing import FakeFal, JobFailure

add_example_paths()

from demo_flask import create_app  # noqa: E402 - the example lives outside the package

SCHNELL = "fal-ai/flux/schnell"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    """A FakeFal with short jobs."""
    with FakeFal(latency=0.05) as server:
        yield server


@pytest.fixture
def base_config(fal: FakeFal, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """App config pointing at FakeFal, with no ambient FAL_* variables or .env file."""
    clear_ambient(monkeypatch)
    return {"FAL_KEY": fal.key, "FAL_BASE_URL": fal.url, "FAL_REQUESTS_PER_MINUTE": 60_000, "FALWRAP_ENV_FILE": None}


@pytest.fixture
def app(base_config: dict[str, Any]) -> Iterator[Flask]:
    """The example app."""
    application = create_app(base_config)
    yield application
    application.extensions["falwrap"].close()


@pytest.fixture
def web(app: Flask) -> FlaskClient:
    """Flask's test client."""
    return app.test_client()


def _poll(web: FlaskClient, url: str) -> Any:
    deadline = time.monotonic() + 10
    while (response := web.get(url)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return response


# --- set-up -------------------------------------------------------------------------------------------


def test_init_app_stores_a_client_built_from_app_config(app: Flask, fal: FakeFal) -> None:
    """FalWrap(app) puts a FalClient at app.extensions["falwrap"], configured from app.config."""
    client = app.extensions["falwrap"]
    assert isinstance(client, FalClient)
    assert client.config.base_url == fal.url
    assert client.config.rate_limit.requests_per_minute == 60_000
    jobs = app.extensions["falwrap_jobs"]
    assert isinstance(jobs, JournalJobStore)
    assert jobs.journal is client.ledger.journal
    with app.app_context():
        assert get_client() is client
        assert get_job_store() is app.extensions["falwrap_jobs"]


def test_one_extension_serves_several_apps_each_with_its_own_client(base_config: dict[str, Any]) -> None:
    """FalWrap() then init_app() on two apps gives each app its own client and its own settings."""
    extension = FalWrap()
    first, second = Flask("first"), Flask("second")
    first.config.update(base_config)
    second.config.update({**base_config, "FAL_DAILY_BUDGET_USD": "2.50"})
    extension.init_app(first)
    extension.init_app(second)
    with first.app_context():
        a = extension.client
    with second.app_context():
        b = extension.client
    assert a is not b
    assert a.config.daily_budget_usd is None
    assert b.config.daily_budget_usd == Decimal("2.50")
    a.close()
    b.close()


def test_missing_key_stops_the_app_at_start_up(base_config: dict[str, Any]) -> None:
    """No key in app.config, environment or .env: init_app raises ConfigurationError naming FAL_KEY."""
    del base_config["FAL_KEY"]
    with pytest.raises(ConfigurationError, match="FAL_KEY"):
        create_app(base_config)


@pytest.mark.parametrize(("name", "value"), [("FAL_REQUESTS_PER_MINUTE", "fast"), ("FAL_DAILY_BUDGET_USD", "-1")])
def test_invalid_value_stops_the_app_naming_the_setting(base_config: dict[str, Any], name: str, value: str) -> None:
    """An invalid value raises ConfigurationError at init_app, naming the setting."""
    with pytest.raises(ConfigurationError, match=name):
        create_app({**base_config, name: value})


def test_status_stream_in_app_config_is_honoured(base_config: dict[str, Any]) -> None:
    """app.config["FALWRAP_STATUS_STREAM"] = False makes the app's client poll instead of streaming."""
    application = create_app({**base_config, "FALWRAP_STATUS_STREAM": False})
    try:
        assert application.extensions["falwrap"].config.status_stream is False
    finally:
        application.extensions["falwrap"].close()


def test_environment_and_env_file_fill_what_app_config_leaves_unset(
    base_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """app.config wins; the environment comes next; the FALWRAP_ENV_FILE file last."""
    env_file = tmp_path / "fal.env"
    env_file.write_text("FAL_MAX_RETRIES=9\nFAL_DAILY_BUDGET_USD=4\nFAL_REQUESTS_PER_MINUTE=1\n")
    monkeypatch.setenv("FAL_MAX_RETRIES", "5")
    application = create_app({**base_config, "FALWRAP_ENV_FILE": str(env_file)})
    config = application.extensions["falwrap"].config
    assert config.rate_limit.requests_per_minute == 60_000
    assert config.retry.max_retries == 5
    assert config.daily_budget_usd == Decimal(4)
    application.extensions["falwrap"].close()


def test_get_client_outside_a_set_up_app_says_what_to_do() -> None:
    """get_client() in an app without FalWrap raises RuntimeError telling to call init_app."""
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="init_app"):
        get_client()


# --- the example views --------------------------------------------------------------------------------


def test_image_view_returns_request_id_and_exact_cost(web: FlaskClient, app: Flask, fal: FakeFal) -> None:
    """POST /image runs one job at FakeFal and answers with its request id and cost."""
    response = web.post("/image", json={"prompt": "a lighthouse"})
    assert response.status_code == 200, response.data
    data = response.get_json()
    assert data["request_id"] in fal.jobs
    assert data["model"] == SCHNELL
    assert Decimal(data["cost_usd"]) == estimate_cost(MODEL_CATALOG[SCHNELL], {"prompt": "a lighthouse"})
    assert fal.submissions == 1
    assert app.extensions["falwrap"].stats()["total_calls"] == 1


def test_submit_answers_202_at_once_and_polling_returns_the_result(web: FlaskClient, app: Flask, fal: FakeFal) -> None:
    """POST /jobs returns 202 before the job ends; GET /jobs/<id> says 202 while it runs, then 200 with the result."""
    fal.set_latency(2.0)
    started = time.monotonic()
    response = web.post("/jobs", json={"prompt": "a slow one"})
    assert time.monotonic() - started < 2.0  # shorter than the job: the request thread did not wait for it
    assert response.status_code == 202, response.data
    accepted = response.get_json()
    assert accepted["status_url"] == f"/jobs/{accepted['request_id']}" == response.headers["Location"]
    assert fal.url not in json.dumps(accepted)  # fal's URLs (used with the key) stay on the server

    running = web.get(accepted["status_url"])
    assert running.status_code == 202
    assert running.get_json()["status"] in {"IN_QUEUE", "IN_PROGRESS"}

    done = _poll(web, accepted["status_url"])
    assert done.status_code == 200
    report = done.get_json()
    assert report["status"] == "COMPLETED"
    assert report["result"]["images"][0]["url"].startswith(fal.url)

    results_fetched = fal.counters["result"]
    assert web.get(accepted["status_url"]).get_json() == report
    assert fal.counters["result"] == results_fetched  # the finished report is kept, fal is not asked again
    assert app.extensions["falwrap"].stats()["total_calls"] == 1
    assert fal.submissions == 1


def test_video_job_with_extra_arguments_is_validated_and_runs(web: FlaskClient, fal: FakeFal) -> None:
    """A video model with arguments goes through submit/poll; an out-of-range argument is a 400 before any HTTP."""
    model = "fal-ai/kling-video/v1/standard/text-to-video"
    bad = web.post("/jobs", json={"prompt": "waves", "model": model, "arguments": {"duration": "7"}})
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "INVALID_INPUT"
    assert fal.counters["submit"] == 0
    accepted = web.post("/jobs", json={"prompt": "waves", "model": model, "arguments": {"duration": "5"}})
    assert accepted.status_code == 202
    report = _poll(web, accepted.get_json()["status_url"]).get_json()
    assert report["status"] == "COMPLETED"
    assert report["result"]["video"]["url"].startswith(fal.url)


def test_failed_job_is_reported_as_failed_with_the_friendly_message(web: FlaskClient, fal: FakeFal) -> None:
    """A job that fails at fal polls as 200 FAILED with the typed error's code and message."""
    fal.fail_next_jobs(1, JobFailure("content_policy_violation", detail="flagged by the safety checker"))
    accepted = web.post("/jobs", json={"prompt": "x"}).get_json()
    report = _poll(web, accepted["status_url"]).get_json()
    assert report["status"] == "FAILED"
    assert report["error"]["code"] == "content_policy_violation"


def test_unknown_job_id_is_404_without_asking_fal(web: FlaskClient, fal: FakeFal) -> None:
    """Polling an id this server never issued answers 404 JSON and sends nothing to fal."""
    response = web.get("/jobs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "UNKNOWN_JOB"
    assert fal.counters["status"] == 0


@pytest.mark.parametrize("path", ["/image", "/jobs"])
def test_spent_budget_is_a_429_json_answer_with_the_friendly_message(
    base_config: dict[str, Any], fal: FakeFal, path: str
) -> None:
    """A budget below one image's cost: both views answer 429 BUDGET_EXCEEDED, Retry-After set, nothing submitted."""
    application = create_app({**base_config, "FAL_DAILY_BUDGET_USD": "0.001"})
    response = application.test_client().post(path, json={"prompt": "x"})
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "BUDGET_EXCEEDED"
    assert "Daily budget of $0.001" in error["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 86_400
    assert fal.submissions == 0
    application.extensions["falwrap"].close()


def test_any_view_raising_a_falwrap_error_gets_json(app: Flask) -> None:
    """The extension's error handler turns a FalwrapError from any view into its JSON answer."""

    @app.get("/boom")
    def boom() -> str:
        raise BudgetExceededError(
            spent=Decimal(1), reserved=Decimal(0), estimate=Decimal("0.5"), budget=Decimal(1), model_id=SCHNELL
        )

    response = app.test_client().get("/boom")
    assert response.status_code == 429
    assert response.get_json()["error"]["type"] == "BudgetExceededError"


def test_stats_view_reports_the_ledger(web: FlaskClient) -> None:
    """GET /stats shows the calls and today's spend of the app's client."""
    for _ in range(2):
        assert web.post("/image", json={"prompt": "x"}).status_code == 200
    data = web.get("/stats").get_json()
    assert data["stats"]["total_calls"] == 2
    assert Decimal(data["daily_cost_usd"]) == Decimal("0.006")


# --- CLI ------------------------------------------------------------------------------------------------


def test_flask_falwrap_stats_prints_calls_and_spend_never_the_key(app: Flask, web: FlaskClient, fal: FakeFal) -> None:
    """`flask falwrap stats` prints the table and --json the numbers; the key appears in neither."""
    assert web.post("/image", json={"prompt": "x"}).status_code == 200
    runner = app.test_cli_runner()
    table = runner.invoke(args=["falwrap", "stats"])
    raw = runner.invoke(args=["falwrap", "stats", "--json"])
    assert table.exit_code == 0, table.output
    assert raw.exit_code == 0, raw.output
    assert "calls:              1 (1 ok, 0 failed" in table.output
    assert "this process only" in table.output
    data = json.loads(raw.output)
    assert data["stats"]["total_calls"] == 1
    assert data["shared"] is False
    for text in (table.output, raw.output):
        assert fal.key.split(":")[1] not in text
