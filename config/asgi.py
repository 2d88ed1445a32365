"""ASGI entry point: HTTP goes to Django, websockets to the Channels routes."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.asgi_handler import asgi_application  # noqa: E402

django_asgi_app = asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from ingestion.uploads import UploadBodyLimitMiddleware, daphne_body_limit_install  # noqa: E402

if settings.FRESHET_WARM_UP:
    import threading

    from ingestion.embedding import embedder

    # Load the embedding model while the server starts, not on the first question.
    threading.Thread(target=lambda: embedder().encode(["warm up"]), name="warm-up", daemon=True).start()

# daphne spools a whole body to disk before the application sees it: refuse oversized uploads earlier.
daphne_body_limit_install()

application = ProtocolTypeRouter(
    {
        # Upload bodies over their size limit are refused while they stream in (ingestion/uploads.py).
        "http": UploadBodyLimitMiddleware(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
