"""GET /api/search/: the passages the caller may see, best first (chat.retrieval)."""

from __future__ import annotations

import time

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.retrieval import search_for_user
from chat.serializers import SearchInputSerializer, SearchOutputSerializer
from ingestion.serializers import ErrorSerializer


class SearchApi(APIView):
    throttle_scope = "search"

    @extend_schema(
        parameters=[SearchInputSerializer],
        responses={
            200: SearchOutputSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A missing or too long q, or a bad k, source or mode."),
            401: OpenApiResponse(ErrorSerializer, description="Send 'Authorization: Token <key>' or sign in."),
            404: OpenApiResponse(ErrorSerializer, description="No such source among those you may see."),
            429: OpenApiResponse(ErrorSerializer, description="Too many searches; wait Retry-After seconds."),
        },
        summary="Search the passages you may see",
        description="Hybrid search (BM25 and embedding kNN, fused) over public sources and those of your "
                    "groups (staff: all). Each result is one chunk with its document, source and a "
                    "highlighted passage.",
    )
    def get(self, request: Request) -> Response:
        params = SearchInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        started = time.perf_counter()
        results = search_for_user(user=request.user, query=data["q"], k=data["k"], mode=data["mode"],
                                  source_id=data.get("source"))
        took_ms = round((time.perf_counter() - started) * 1000, 1)
        return Response(SearchOutputSerializer({"results": results, "took_ms": took_ms}).data)
