"""Websocket routes (the chat consumer joins here)."""

from chat.routing import websocket_urlpatterns as chat_websocket_urlpatterns
from dashboard.routing import websocket_urlpatterns as dashboard_websocket_urlpatterns

websocket_urlpatterns: list = [*chat_websocket_urlpatterns, *dashboard_websocket_urlpatterns]
