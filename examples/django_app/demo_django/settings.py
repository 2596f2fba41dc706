"""Settings of the falwrap Django demo: no database, JSON views only.

Run it::

    cd examples/django_app
    FAL_KEY=... python manage.py check        # falwrap.E001 if the key is missing
    FAL_KEY=... python manage.py runserver
    # several workers share limits, budget and jobs through one store (Redis or PostgreSQL),
    # and fal calls back when a job ends:
    FAL_KEY=... FALWRAP_STORE_URL=postgresql://app@db/app \
        FALWRAP_WEBHOOK_URL=https://your.host/fal/webhook/ \
        gunicorn demo_django.wsgi -w 4 --threads 8
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-do-not-deploy")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["falwrap.contrib.django_app"]
MIDDLEWARE = ["falwrap.contrib.django.FalwrapErrorMiddleware"]
ROOT_URLCONF = "demo_django.urls"
WSGI_APPLICATION = "demo_django.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# falwrap's settings use the environment variables' names. Anything left out
# here comes from the environment, then from .env: this demo takes it all from
# there (FAL_KEY, FAL_REQUESTS_PER_MINUTE, FAL_DAILY_BUDGET_USD, FALWRAP_STORE_URL,
# FALWRAP_WEBHOOK_URL, FALWRAP_WEBHOOK_JWKS_URL, ...).
FALWRAP: dict[str, object] = {}

# Where the demo appends one JSON line per finished job (views.job_finished_received); unset: log only.
DEMO_FINISHED_JOBS_FILE = os.environ.get("DEMO_FINISHED_JOBS_FILE")
