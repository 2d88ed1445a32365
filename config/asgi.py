"""ASGI entry point: HTTP goes to Django, websockets to the Channels routes."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.asgi_handler import asgi_application  # noqa: E402

django_asgi_app = asgi_application()

from ingestion.embedding import serving_process  # noqa: E402

serving_process()  # before the model loads (EMBEDDING_WEB_THREADS)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from ingestion.uploads import UploadBodyLimitMiddleware, daphne_body_limit_install  # noqa: E402

if settings.FRESHET_WARM_UP:
    import logging
    import threading

    from ingestion.embedding import embedder
    from ingestion.search_index import search_index

    def _warm_up() -> None:
        # The embedding model and the index's in-memory snapshot, while the server starts, not
        # on the first question. A failure here is the first search's to report.
        try:
            embedder().encode(["warm up"])
            search_index().warm_up()
        except Exception:
            logging.getLogger("config.asgi").warning("Warm-up failed; the first search will load instead",
                                                     exc_info=True)

    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()

# daphne spools a whole body to disk before the application sees it: refuse oversized uploads earlier.
daphne_body_limit_install()

application = ProtocolTypeRouter(
    {
        # Upload bodies over their size limit are refused while they stream in (ingestion/uploads.py).
        "http": UploadBodyLimitMiddleware(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
