"""REST routes of the ingestion app, mounted under /api/ (config/urls.py)."""

from django.urls import path

from ingestion import apis, sync_apis

app_name = "ingestion"

urlpatterns = [
    path("sources/", apis.SourceListApi.as_view(), name="sources"),
    path("sources/<int:source_id>/", apis.SourceDetailApi.as_view(), name="source-detail"),
    path("sources/<int:source_id>/sync/", sync_apis.SourceSyncApi.as_view(), name="source-sync"),
    path("sources/<int:source_id>/syncs/", sync_apis.SourceSyncListApi.as_view(), name="source-syncs"),
    path("documents/", apis.DocumentListApi.as_view(), name="documents"),
    path("documents/bulk/", apis.DocumentBulkUploadApi.as_view(), name="documents-bulk"),
    path("documents/<int:document_id>/", apis.DocumentDetailApi.as_view(), name="document-detail"),
    path("documents/<int:document_id>/chunks/", apis.DocumentChunksApi.as_view(), name="document-chunks"),
    path("documents/<int:document_id>/reindex/", apis.DocumentReindexApi.as_view(), name="document-reindex"),
]
