"""GET /api/search/: the passages the caller may see, best first (chat.retrieval)."""

from __future__ import annotations

import time

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.retrieval import SearchResult, search_for_user
from chat.serializers import SearchInputSerializer, SearchOutputSerializer
from ingestion.serializers import ErrorSerializer


def search_result_data(result: SearchResult) -> dict:
    """One result as SearchResultOutputSerializer writes it (the same fields, the same types)."""
    return {
        "chunk_id": str(result.chunk_id), "document_id": int(result.document_id), "source_id": int(result.source_id),
        "source": str(result.source), "title": str(result.title), "text": str(result.text), "uri": str(result.uri),
        "score": float(result.score), "highlight": str(result.highlight), "relevance": float(result.relevance),
        "relevant": bool(result.relevant),
    }


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
        # The fields of SearchOutputSerializer (the documented schema), built directly: the
        # serializer's per-field machinery cost about a millisecond of CPU for ten results.
        return Response({"results": [search_result_data(result) for result in results], "took_ms": took_ms})
