"""The one table of environment variables: what it documents is what every entry point honours.

``.env.example`` and the README's table are compared with the table itself;
then every variable is set to a distinctive value and read back from the
FalConfig that ``FalConfig.from_env``, the ``falwrap`` command, Django's
``FALWRAP`` setting and Flask's ``app.config`` each build.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import contrib_django_setup  # noqa: F401  (configures Django before the imports below)
import pytest
from conftest import REDIS_URL
from contrib_helpers import clear_ambient
from django.core import checks
from env_docs import ENV_EXAMPLE, README, render_env_example, render_readme_table
from flask import Flask

from falwrap import ConfigurationError, FalConfig
from falwrap.cli import main
from falwrap.config import ENV_VARS, env_var, settings_of
from falwrap.contrib import django as fw_django
from falwrap.contrib._common import KNOWN_NAMES
from falwrap.contrib.flask import FalWrap

#: A valid value for each library variable, different from its default, as a person would write it.
DISTINCT: dict[str, str] = {
    "FAL_KEY": "distinct-id:distinct-secret",
    "FAL_API_KEY": "older-id:older-secret",
    "FAL_KEY_ID": "half-id",
    "FAL_KEY_SECRET": "half-secret",
    "FAL_BASE_URL": "http://127.0.0.1:9999",
    "FAL_TIMEOUT_IMAGE": "12345",
    "FAL_TIMEOUT_UPSCALE": "23456",
    "FAL_TIMEOUT_VIDEO_SHORT": "34567",
    "FAL_TIMEOUT_VIDEO": "45678",
    "FAL_TIMEOUT_VIDEO_LONG": "56789",
    "FAL_TIMEOUT_MODEL_LIST": "6789",
    "FAL_TIMEOUT_QUEUE_STATUS": "4321",
    "FAL_MAX_RETRIES": "7",
    "FAL_RETRY_DELAY": "250",
    "FAL_RETRY_MAX_DELAY": "9500",
    "FAL_REQUESTS_PER_MINUTE": "123.5",
    "FAL_RATE_BURST": "3",
    "FAL_MAX_CONCURRENT": "5",
    "FAL_DAILY_BUDGET_USD": "12.34",
    "FALWRAP_LIVE_PRICING": "true",
    # A Flask app's client connects to its store at once: these name the test Redis.
    "FALWRAP_STORE_URL": REDIS_URL,
    "FALWRAP_REDIS_URL": REDIS_URL,
    "FALWRAP_POLL_INTERVAL": "250",
    "FALWRAP_STATUS_STREAM": "false",
    "FALWRAP_IDEMPOTENCY_TTL": "3600000",
    "FALWRAP_QUEUE_PRIORITY": "low",
    "FALWRAP_START_TIMEOUT": "30000",
    "FALWRAP_OBJECT_LIFECYCLE": "86400000",
    "FALWRAP_SERVER_RETRIES": "false",
    "FALWRAP_FALLBACKS": "false",
    "FALWRAP_RESUBMIT_AMBIGUOUS": "true",
    "FALWRAP_WEBHOOK_URL": "https://example.com/hooks/fal",
    "FALWRAP_WEBHOOK_JWKS_URL": "https://keys.example.com/jwks.json",
}
LIBRARY = [var.name for var in ENV_VARS if var.scope == "library"]
#: The key halves only count together.
_PAIRS = {"FAL_KEY_ID": "FAL_KEY_SECRET", "FAL_KEY_SECRET": "FAL_KEY_ID"}
_BASE = "http://127.0.0.1:9"


def _setting(name: str) -> dict[str, str]:
    """The variable under test (with its other half for a split key) and a key when it is not about the key."""
    values = {name: DISTINCT[name]}
    if name in _PAIRS:
        values[_PAIRS[name]] = DISTINCT[_PAIRS[name]]
    if env_var(name).field != "api_key":
        values["FAL_KEY"] = "any-id:any-secret"
    return values


def _expected(name: str) -> str:
    """What settings_of shows for the distinctive value: the value itself, the key as its fingerprint."""
    if env_var(name).field != "api_key":
        return DISTINCT[name]
    key = f"{DISTINCT['FAL_KEY_ID']}:{DISTINCT['FAL_KEY_SECRET']}" if name in _PAIRS else DISTINCT[name]
    return f"fingerprint {FalConfig(api_key=key).key_fingerprint}"


@pytest.fixture
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No FAL_*/FALWRAP_* variable in the environment and no .env in the working directory."""
    clear_ambient(monkeypatch)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the documents say what the table says --------------------------------------------------------


def test_env_example_is_the_table_exactly() -> None:
    """.env.example lists every variable of the table, with its doc and default, and nothing else."""
    assert ENV_EXAMPLE.read_text() == render_env_example(), "regenerate with: python tests/env_docs.py"
    written = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert written == {var.name for var in ENV_VARS}


def test_readme_configuration_table_is_the_table_exactly() -> None:
    """The README's configuration table has one row per variable, in the table's order, with its default."""
    assert render_readme_table() in README.read_text(), "paste the output of: python tests/env_docs.py"


def test_framework_settings_accept_exactly_the_tables_names() -> None:
    """Django and Flask know every variable of the table (FALWRAP_STATUS_STREAM included) and nothing more."""
    assert {var.name for var in ENV_VARS} == KNOWN_NAMES
    assert "FALWRAP_STATUS_STREAM" in KNOWN_NAMES
    assert set(DISTINCT) == set(LIBRARY), "give every library variable a distinctive value above"


def test_every_variable_reads_back_as_written() -> None:
    """Each distinctive value parses and shows again in the same unit (settings_of inverts from_env)."""
    for name in LIBRARY:
        var = env_var(name)
        if var.field == "api_key":
            continue
        assert var.value.show(var.parse(DISTINCT[name])) == DISTINCT[name], name


# --- each variable is honoured everywhere ---------------------------------------------------------


@pytest.mark.parametrize("name", LIBRARY)
def test_the_library_honours_it(name: str) -> None:
    """FalConfig.from_env turns the variable into the setting it documents."""
    config = FalConfig.from_env(None, environ=_setting(name))
    assert settings_of(config)[name] == _expected(name)


@pytest.mark.parametrize("name", LIBRARY)
def test_the_command_honours_it(name: str, hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`falwrap config --json` (in-process) shows the variable's value as the command's client would use it."""
    for key, value in _setting(name).items():
        monkeypatch.setenv(key, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["config", "--json"]) == 0, err.getvalue()
    assert json.loads(out.getvalue())["settings"][name] == _expected(name)


@pytest.fixture
def django_settings(settings: Any, hermetic: Path) -> Iterator[Any]:
    """Django settings with no env file; the shared client is dropped afterwards."""
    settings.FALWRAP_ENV_FILE = None
    yield settings
    fw_django.reset()


@pytest.mark.parametrize("name", LIBRARY)
def test_django_honours_it(name: str, django_settings: Any) -> None:
    """settings.FALWRAP = {NAME: value} builds the same config, with no unknown-name warning."""
    django_settings.FALWRAP = {**_setting(name), "FAL_BASE_URL": _BASE} if name != "FAL_BASE_URL" else _setting(name)
    assert settings_of(fw_django.get_config())[name] == _expected(name)
    assert "falwrap.W002" not in {m.id for m in checks.run_checks()}


@pytest.mark.parametrize("name", LIBRARY)
def test_flask_honours_it(name: str, hermetic: Path, request: pytest.FixtureRequest) -> None:
    """app.config[NAME] = value reaches the app's client."""
    if env_var(name).field == "store_url":
        request.getfixturevalue("redis_url")  # skips without Redis locally, fails under CI
    app = Flask(__name__)
    app.config.update({"FALWRAP_ENV_FILE": None, **_setting(name)})
    FalWrap(app)
    client = app.extensions["falwrap"]
    try:
        assert settings_of(client.config)[name] == _expected(name)
    finally:
        client.close()


def test_the_integrations_honour_their_own_variables(django_settings: Any, hermetic: Path) -> None:
    """FALWRAP_ENV_FILE picks the dotenv file for Django and Flask; FALWRAP_WORKERS drives Django's W001."""
    env_file = hermetic / "other.env"
    env_file.write_text("FAL_KEY=file-id:file-secret\nFAL_MAX_RETRIES=9\n")
    django_settings.FALWRAP = {"FALWRAP_ENV_FILE": str(env_file)}
    assert fw_django.get_config().retry.max_retries == 9
    app = Flask(__name__)
    app.config["FALWRAP_ENV_FILE"] = str(env_file)
    FalWrap(app)
    assert app.extensions["falwrap"].config.retry.max_retries == 9
    app.extensions["falwrap"].close()
    django_settings.FALWRAP = {"FAL_KEY": "a-id:a-secret", "FALWRAP_WORKERS": "3"}
    assert "falwrap.W001" in {m.id for m in checks.run_checks()}
    django_settings.FALWRAP = {"FAL_KEY": "a-id:a-secret", "FALWRAP_WORKERS": "1"}
    assert "falwrap.W001" not in {m.id for m in checks.run_checks()}
    with pytest.raises(ConfigurationError, match="FALWRAP_WORKERS"):
        flask_app = Flask(__name__)
        flask_app.config.update({"FAL_KEY": "a-id:a-secret", "FALWRAP_WORKERS": "0", "FALWRAP_ENV_FILE": None})
        FalWrap(flask_app)
