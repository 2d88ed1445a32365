"""REST routes of the feedback app, mounted under /api/ (config/urls.py)."""

from django.urls import path

from feedback.apis import FeedbackApi

app_name = "feedback"

urlpatterns = [
    path("feedback/", FeedbackApi.as_view(), name="feedback"),
]
