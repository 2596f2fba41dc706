"""Django integration: one shared client per process, configured from ``settings.FALWRAP``.

Add the app, then configure with the environment variables' names::

    INSTALLED_APPS = [..., "falwrap.contrib.django_app"]
    FALWRAP = {
        "FAL_KEY": os.environ.get("FAL_KEY"),
        "FAL_REQUESTS_PER_MINUTE": 600,
        "FAL_DAILY_BUDGET_USD": "25.00",
        "FALWRAP_STORE_URL": "redis://127.0.0.1:6379/0",   # shared limits across workers
    }

Names left out of ``FALWRAP`` fall back to the environment, then to the
``.env`` file (``FALWRAP["FALWRAP_ENV_FILE"]`` or ``settings.FALWRAP_ENV_FILE``,
else the ``FALWRAP_ENV_FILE`` environment variable, default ``".env"``;
``None`` reads none). In a view::

    from falwrap.contrib.django import get_client
    result = get_client().image("a lighthouse at dusk")

The app registers system checks that run with ``manage.py check``,
``runserver`` and ``migrate``: ``falwrap.E001`` (no key), ``falwrap.E002``
(an invalid value), ``falwrap.W001`` (several workers but in-process limits)
and ``falwrap.W002`` (an unknown name in ``FALWRAP``); and the
``manage.py falwrap_stats`` command. ``FalwrapErrorMiddleware`` turns any
uncaught :class:`~falwrap.FalwrapError` into a JSON answer (429 for a spent budget).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, JsonResponse

from falwrap.client import FalClient
from falwrap.config import FalConfig
from falwrap.contrib import _common
from falwrap.contrib.django_webhooks import job_finished, make_webhook_view
from falwrap.contrib.web import ErrorResponse, JobStore, error_response, job_store_for
from falwrap.errors import ConfigurationError, FalwrapError

__all__ = [
    "FalwrapErrorMiddleware",
    "check_falwrap",
    "get_client",
    "get_config",
    "get_job_store",
    "job_finished",
    "json_error",
    "reset",
    "webhook_view",
]

#: Settings whose change (``override_settings`` in tests) drops the shared client.
WATCHED_SETTINGS = frozenset({"FALWRAP", "FALWRAP_ENV_FILE"})

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _settings_mapping() -> Mapping[str, Any]:
    value = getattr(settings, "FALWRAP", None) or {}
    if not isinstance(value, Mapping):
        msg = f"settings.FALWRAP must be a dict of setting names to values, got {type(value).__name__}."
        raise ConfigurationError(msg, variable="FALWRAP")
    return value


def _env_file() -> str | os.PathLike[str] | None:
    configured = _settings_mapping().get("FALWRAP_ENV_FILE", getattr(settings, "FALWRAP_ENV_FILE", ...))
    return _common.env_file_setting(configured)


def _merged() -> dict[str, str]:
    return _common.merged_values(_settings_mapping(), env_file=_env_file())


def get_config() -> FalConfig:
    """The config ``settings.FALWRAP`` (over the environment and ``.env``) describes.

    Returns:
        A fresh, validated :class:`~falwrap.FalConfig`.

    Raises:
        ConfigurationError: a value is invalid; the message names it.
    """
    return _common.config_from_settings(_settings_mapping(), env_file=_env_file())


def _build(key: str, factory: Callable[[], Any]) -> Any:
    """Build the per-process singleton ``key`` once, under the lock (double-checked).

    ``factory`` must not call :func:`_build` itself: the lock is not reentrant,
    so a factory needing another singleton gets it before calling this.
    """
    pid = os.getpid()
    entry = _state.get(key)
    # A client inherited through fork (gunicorn --preload) shares sockets with
    # its parent: each process builds its own instead.
    if entry is not None and entry[0] == pid:
        return entry[1]
    with _lock:
        entry = _state.get(key)
        if entry is not None and entry[0] == pid:
            return entry[1]
        value = factory()
        _state[key] = (pid, value)
        return value


def get_client() -> FalClient:
    """The process-wide :class:`~falwrap.FalClient`, built on first use. Thread-safe.

    Every thread of a worker shares it (one connection pool, one limiter, one
    ledger); each worker process has its own unless ``FALWRAP_STORE_URL``
    names a store they share limits, ledger and budget through.

    Returns:
        The client.

    Raises:
        ConfigurationError: no key, or an invalid setting (the system checks
            report these at start-up).
    """
    client: FalClient = _build("client", lambda: FalClient(get_config()))
    return client


def get_job_store() -> JobStore:
    """The submitted jobs: a view of the shared client's journal (every worker sharing the store sees them).

    Returns:
        The :class:`~falwrap.contrib.web.JournalJobStore` over ``get_client()``'s journal.

    Raises:
        ConfigurationError: as for :func:`get_client`.
    """
    # The client first, outside the lock the store is built under: built from
    # inside it, the client's own _build would wait on that lock for ever.
    client = get_client()
    store: JobStore = _build("jobs", lambda: job_store_for(client))
    return store


def reset() -> None:
    """Drop the shared client and job store; the next :func:`get_client` builds new ones.

    Closes the old client's connection pools when it was built in this process.
    Called on ``setting_changed`` for ``FALWRAP`` and ``FALWRAP_ENV_FILE``.
    """
    with _lock:
        entries = list(_state.values())
        _state.clear()
    for pid, value in entries:
        if pid == os.getpid() and isinstance(value, FalClient):
            value.close()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in WATCHED_SETTINGS:
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="falwrap.contrib.django.reset")


# --- errors as JSON ---------------------------------------------------------------------------------


def json_error(exc: FalwrapError) -> JsonResponse:
    """A JSON answer for ``exc`` with the status :func:`~falwrap.contrib.web.error_response` maps it to.

    Args:
        exc: The error.

    Returns:
        e.g. 429 ``{"error": {"code": "BUDGET_EXCEEDED", "message": ...}}`` with ``Retry-After``.
    """
    mapped: ErrorResponse = error_response(exc)
    response = JsonResponse(mapped.body, status=mapped.status)
    for name, value in mapped.headers.items():
        response[name] = value
    return response


class FalwrapErrorMiddleware:
    """Turn an uncaught :class:`~falwrap.FalwrapError` from a view into :func:`json_error`.

    Add ``"falwrap.contrib.django.FalwrapErrorMiddleware"`` to ``MIDDLEWARE``.
    Other exceptions go on to Django's handling.

    Args:
        get_response: The next handler (Django passes it).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Pass the request on.

        Args:
            request: The request.

        Returns:
            The view's response.
        """
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Answer a falwrap error as JSON; leave any other exception to Django.

        Args:
            request: The request.
            exception: What the view raised.

        Returns:
            The JSON response, or ``None``.
        """
        if isinstance(exception, FalwrapError):
            return json_error(exception)
        return None


# --- system checks ------------------------------------------------------------------------------------


def check_falwrap(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The ``falwrap.*`` system checks (registered by the app's ``ready()``).

    Never connects anywhere: the checks run on every ``manage.py`` command.

    Args:
        app_configs: Django passes the apps being checked (unused: the settings are global).
        **kwargs: Django's other arguments.

    Returns:
        ``falwrap.E001`` no key; ``falwrap.E002`` an invalid value; ``falwrap.W001``
        several workers likely but limits in-process; ``falwrap.W002`` unknown names.
    """
    messages: list[checks.CheckMessage] = []
    try:
        raw = _settings_mapping()
        values = _merged()
        config = _common.config_from_settings(raw, env_file=_env_file())
    except ConfigurationError as exc:
        return [
            checks.Error(
                f"falwrap: {exc.message}",
                hint="Fix the value in settings.FALWRAP, the environment or .env (see .env.example).",
                obj="settings.FALWRAP",
                id="falwrap.E002",
            )
        ]
    unknown = _common.unknown_names(raw)
    if unknown:
        messages.append(
            checks.Warning(
                f"falwrap: settings.FALWRAP has names falwrap does not know: {', '.join(unknown)}.",
                hint="Use the names of .env.example, e.g. FAL_KEY, FAL_REQUESTS_PER_MINUTE, FALWRAP_STORE_URL.",
                obj="settings.FALWRAP",
                id="falwrap.W002",
            )
        )
    if not _common.has_api_key(values):
        messages.append(
            checks.Error(
                "falwrap: no fal API key is configured; every call to fal would fail.",
                hint=(
                    'Set FALWRAP = {"FAL_KEY": ...} in settings, or FAL_KEY in the environment or .env '
                    "(FAL_KEY_ID and FAL_KEY_SECRET together also work). Keys: https://fal.ai/dashboard/keys"
                ),
                obj="settings.FALWRAP",
                id="falwrap.E001",
            )
        )
    workers = _common.likely_workers(values)
    if workers > 1 and not _common.shares_state(config):
        messages.append(
            checks.Warning(
                f"falwrap: about {workers} worker processes are likely, but the rate limit, concurrency cap "
                "and daily budget are per process: together the workers may send "
                f"{workers}x FAL_REQUESTS_PER_MINUTE and spend {workers}x FAL_DAILY_BUDGET_USD.",
                hint=(
                    "Set FALWRAP_STORE_URL (e.g. redis://127.0.0.1:6379/0) so every worker shares them; "
                    "or set FALWRAP_WORKERS=1 if only one process calls fal."
                ),
                obj="settings.FALWRAP",
                id="falwrap.W001",
            )
        )
    return messages


#: The webhook endpoint for fal's deliveries (see :mod:`falwrap.contrib.django_webhooks`).
webhook_view = make_webhook_view(get_client)
