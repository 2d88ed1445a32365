from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import health

handler404 = "config.exceptions.api_not_found"

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/health/", health, name="health"),
    # The API description is public (it holds no data); Swagger UI's assets are served locally.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("ingestion.urls")),
    path("api/", include("chat.urls")),
    path("api/", include("feedback.urls")),
    path("api/", include("events.urls")),  # /api/events/ (CloudEvents intake), /api/sinks/
    path("accounts/login/", auth_views.LoginView.as_view(template_name="chat/login.html",
                                                         redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("chat.urls_chat")),
    path("", include("dashboard.urls")),  # /dashboard/ and /metrics
]
