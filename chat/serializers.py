"""Input and output serializers of the chat app's REST endpoints."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from chat.retrieval import MODES


class SearchInputSerializer(serializers.Serializer):
    q = serializers.CharField(trim_whitespace=True, help_text="What to search for.")
    k = serializers.IntegerField(required=False, default=10, min_value=1,
                                 help_text="How many passages to return (at most SEARCH_MAX_K, default 100).")
    source = serializers.IntegerField(required=False, min_value=1,
                                      help_text="Search only this source (one you may see).")
    mode = serializers.ChoiceField(choices=MODES, required=False, default="hybrid",
                                   help_text="hybrid (BM25 and kNN fused), bm25 (words) or knn (meaning).")

    def validate_q(self, value: str) -> str:
        # Limits are read per request (settings can change in tests and between deployments).
        if len(value) > settings.SEARCH_MAX_QUERY_CHARS:
            raise serializers.ValidationError(
                f"The query is {len(value)} characters long; the limit is {settings.SEARCH_MAX_QUERY_CHARS}.")
        return value

    def validate_k(self, value: int) -> int:
        if value > settings.SEARCH_MAX_K:
            raise serializers.ValidationError(f"k may be at most {settings.SEARCH_MAX_K}.")
        return value


class SearchResultOutputSerializer(serializers.Serializer):
    chunk_id = serializers.CharField()
    document_id = serializers.IntegerField()
    source_id = serializers.IntegerField()
    source = serializers.CharField(help_text="The source's name.")
    title = serializers.CharField()
    text = serializers.CharField(help_text="The passage (chunk) as indexed.")
    uri = serializers.CharField()
    score = serializers.FloatField(help_text="The fused (or BM25 / cosine) score; higher is better.")
    highlight = serializers.CharField(
        help_text="The passage's sentences with query terms, HTML-escaped, matches in <mark>.")
    relevance = serializers.FloatField(
        help_text="Calibrated probability, 0..1, that the passage answers the query (comparable across queries).")
    relevant = serializers.BooleanField(
        help_text="relevance >= CHAT_RELEVANCE_THRESHOLD: a hit, not a near miss; the chat abstains without one.")


class SearchOutputSerializer(serializers.Serializer):
    results = SearchResultOutputSerializer(many=True)
    took_ms = serializers.FloatField(help_text="Time spent searching, in milliseconds.")
