"""The AppConfig that registers falwrap's system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class FalwrapAppConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """falwrap's Django app: registers the ``falwrap.*`` system checks on start-up."""

    name = "falwrap.contrib.django_app"
    label = "falwrap"
    verbose_name = "falwrap (fal.ai)"

    def ready(self) -> None:
        """Register :func:`falwrap.contrib.django.check_falwrap` (idempotent)."""
        from falwrap.contrib.django import check_falwrap

        checks.register(check_falwrap)
