"""The operator's pages: /dashboard/ and /metrics (mounted at the site root by config/urls.py)."""

from django.urls import path

from dashboard import views
from dashboard.metrics.views import metrics

urlpatterns = [
    path("dashboard/", views.dashboard_page, name="dashboard"),
    path("dashboard/data/", views.dashboard_data, name="dashboard-data"),
    path("metrics", metrics, name="metrics"),
]
