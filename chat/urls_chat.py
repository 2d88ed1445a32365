"""The chat page and the document page (mounted at the site root by config/urls.py; the chat's REST routes, POST
/api/chat/ included, are in chat/urls.py under /api/)."""

from django.urls import path

from chat import documents, views

urlpatterns = [
    path("chat/", views.chat_page, name="chat"),
    path("chat/<int:conversation_id>/", views.chat_page, name="chat-conversation"),
    path("documents/<int:document_id>/", documents.document_page, name="document"),
    path("documents/<int:document_id>/download/", documents.document_download, name="document-download"),
]
