"""REST API of connector syncs: start one, list a source's runs. Beside ingestion/apis.py (which
holds sources and documents) to keep each module readable; the same rules: what the caller may
not see answers 404, starting a sync is for staff (403)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from ingestion.api_schema import WWW_AUTHENTICATE, errors
from ingestion.apis import _paginated, _query, _require_staff, _source_or_404
from ingestion.connectors.sync import source_sync_request
from ingestion.selectors import sync_runs_of
from ingestion.serializers import ErrorSerializer, PageQuerySerializer, SyncRunOutputSerializer

SYNC_RUNNING = OpenApiResponse(ErrorSerializer, description="A sync of this source is already running; wait for it "
                                                            "(see GET /api/sources/{id}/syncs/).")


class SourceSyncApi(APIView):
    @extend_schema(
        operation_id="sources_sync", tags=["sources"], summary="Sync a source now (staff)",
        description="Starts a sync of a connector source (url, sitemap, feed, folder) on the workers and answers "
                    "at once with the sync run (status running): follow it at GET /api/sources/{id}/syncs/. "
                    "409 while a sync of the source runs; 400 for a kind with nothing to sync (upload, push, "
                    "queue).",
        request=None, parameters=[WWW_AUTHENTICATE],
        responses={202: SyncRunOutputSerializer, 409: SYNC_RUNNING, **errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, source_id: int) -> Response:
        source = _source_or_404(request, source_id)
        _require_staff(request, "start syncs")
        run = source_sync_request(source, trigger="api")
        return Response(SyncRunOutputSerializer(run, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)


class SourceSyncListApi(APIView):
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(
        operation_id="sources_syncs", tags=["sources"], summary="The sync runs of a source, newest first",
        parameters=[PageQuerySerializer, WWW_AUTHENTICATE],
        responses={200: SyncRunOutputSerializer(many=True), **errors(400, 401, 404)},
    )
    def get(self, request: Request, source_id: int) -> Response:
        source = _source_or_404(request, source_id)
        _query(request)
        return _paginated(queryset=sync_runs_of(source=source), serializer_class=SyncRunOutputSerializer,
                          request=request, view=self)
