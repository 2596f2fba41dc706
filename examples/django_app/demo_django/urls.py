"""Routes of the demo: a blocking image call, the submit/poll pair, fal's webhook, and stats."""

from django.urls import path

from demo_django import views
from falwrap.contrib.django import webhook_view

urlpatterns = [
    path("image", views.image, name="image"),
    path("jobs", views.submit_job, name="submit-job"),
    path("jobs/<str:request_id>", views.job, name="job"),
    path("fal/webhook/", webhook_view, name="fal-webhook"),
    path("stats", views.stats, name="stats"),
]
