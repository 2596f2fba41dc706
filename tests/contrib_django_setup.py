"""Importing this configures Django with the example project's settings (once per process).

``settings.configure`` rather than DJANGO_SETTINGS_MODULE: nothing leaks into
the environment of other tests or of the subprocesses they start.
"""

from __future__ import annotations

import django
from contrib_helpers import add_example_paths
from django.conf import settings

add_example_paths()

if not settings.configured:
    import demo_django.settings as demo_settings

    settings.configure(**{name: getattr(demo_settings, name) for name in dir(demo_settings) if name.isupper()})
    django.setup()
