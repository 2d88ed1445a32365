"""REST routes of the chat app, mounted under /api/ (config/urls.py)."""

from django.urls import path

from chat.apis.chat import ChatApi
from chat.apis.search import SearchApi

app_name = "chat"

urlpatterns = [
    path("search/", SearchApi.as_view(), name="search"),
    path("chat/", ChatApi.as_view(), name="chat"),
]
