from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The operator's view: /dashboard/ (live over a websocket), /metrics, the admin's branding."""

    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dashboard import live
        from dashboard.metrics import instruments
        from events.services import event_observer_add

        # Both hear of each event after its commit, in the process that published it: the
        # producers do not know they exist (events/services.py, observers).
        event_observer_add(live.event_offer)
        event_observer_add(instruments.event_count)
        instruments.task_timing_connect()
        from config.logs import task_log_context_connect

        task_log_context_connect()
