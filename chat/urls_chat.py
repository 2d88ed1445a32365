"""The chat page (mounted at the site root by config/urls.py; the chat's REST routes, POST
/api/chat/ included, are in chat/urls.py under /api/)."""

from django.urls import path

from chat import views

urlpatterns = [
    path("chat/", views.chat_page, name="chat"),
    path("chat/<int:conversation_id>/", views.chat_page, name="chat-conversation"),
]
