"""Routes of the demo: a blocking image call, the submit/poll pair, and stats."""

from django.urls import path

from demo_django import views

urlpatterns = [
    path("image", views.image, name="image"),
    path("jobs", views.submit_job, name="submit-job"),
    path("jobs/<str:request_id>", views.job, name="job"),
    path("stats", views.stats, name="stats"),
]
