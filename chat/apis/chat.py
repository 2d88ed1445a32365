"""POST /api/chat/: ask a question, get the answer with its citations in one response (the same
services as the chat socket, without streaming)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.models import Message
from chat.selectors import Asker
from chat.services import answer_ask
from ingestion.serializers import ErrorSerializer, StrictCharField, StrictIntegerField


class QuestionInputSerializer(serializers.Serializer):
    # The length limit (CHAT_MAX_QUESTION_CHARS) is checked by the service, read at call time.
    question = StrictCharField(trim_whitespace=True, help_text="What to ask.")
    conversation = StrictIntegerField(
        required=False, allow_null=True, min_value=1,
        help_text="Continue this conversation of yours; leave out or null to start a new one.",
    )
    sources = serializers.ListField(
        child=StrictIntegerField(min_value=1), required=False, allow_null=True, max_length=100,
        help_text="Ask within these sources (ids you may see); leave out for all of yours.",
    )


class CitationOutputSerializer(serializers.Serializer):
    n = serializers.IntegerField(help_text="The number the answer cites it by: [n].")
    chunk_id = serializers.CharField()
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    uri = serializers.CharField()
    text = serializers.CharField(help_text="The passage, as it was when the answer was made.")
    page = serializers.IntegerField(allow_null=True, help_text="The PDF page the passage starts on (else null).")
    url = serializers.CharField(help_text="Where it opens: a web source's page, else Freshet's document page "
                                          "with the passage highlighted.")


class AnswerOutputSerializer(serializers.ModelSerializer):
    message_id = serializers.IntegerField(source="pk")
    conversation = serializers.IntegerField(source="conversation_id")
    text = serializers.CharField(source="answer")
    citations = CitationOutputSerializer(many=True)
    model = serializers.CharField(source="model_name")
    notice = serializers.SerializerMethodField(help_text="Why the answer quotes documents instead of the model.")
    related = CitationOutputSerializer(many=True, help_text="When abstaining: the nearest passages, not cited.")

    class Meta:
        model = Message
        fields = ["message_id", "conversation", "question", "text", "citations", "citations_inferred", "mode",
                  "model", "notice", "stale", "abstained", "related", "sources", "retrieval_ms", "first_token_ms",
                  "total_ms"]

    def get_notice(self, message: Message) -> str:
        return message.error if message.status == Message.Status.COMPLETE else ""


class ChatApi(APIView):
    throttle_scope = "chat"

    @extend_schema(
        request=QuestionInputSerializer,
        responses={
            200: AnswerOutputSerializer,
            400: OpenApiResponse(ErrorSerializer, description="An empty or too long question."),
            401: OpenApiResponse(ErrorSerializer, description="Send 'Authorization: Token <key>' or sign in."),
            404: OpenApiResponse(ErrorSerializer, description="No such conversation, or source, among yours."),
            429: OpenApiResponse(ErrorSerializer, description="Too many questions; wait Retry-After seconds."),
            502: OpenApiResponse(ErrorSerializer, description="The language model broke off mid-answer."),
        },
        summary="Ask a question over your sources",
        description="Retrieves the passages you may see (within `sources` if given), answers from them and "
                    "cites them as [n]. With no language model configured the answer quotes the best sentences. "
                    "When no passage answers the question, `abstained` is true, the text says so, nothing is "
                    "cited and `related` holds the nearest passages.",
    )
    def post(self, request: Request) -> Response:
        serializer = QuestionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        session_key = request.session.session_key if hasattr(request, "session") else ""
        message = answer_ask(asker=Asker(user=request.user, session_key=session_key or ""),
                             question=serializer.validated_data["question"],
                             conversation_id=serializer.validated_data.get("conversation"),
                             sources=serializer.validated_data.get("sources"))
        return Response(AnswerOutputSerializer(message).data)
