"""REST routes of the events app, mounted under /api/ (config/urls.py)."""

from django.urls import path

from events import apis

app_name = "events"

urlpatterns = [
    path("events/", apis.EventIntakeApi.as_view(), name="intake"),
    path("sinks/", apis.SinkListApi.as_view(), name="sinks"),
    path("sinks/<int:sink_id>/", apis.SinkDetailApi.as_view(), name="sink-detail"),
    path("sinks/<int:sink_id>/deliveries/", apis.SinkDeliveriesApi.as_view(), name="sink-deliveries"),
]
