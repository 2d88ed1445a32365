"""POST /api/feedback/: a vote on an answer or on one of its passages, as the chat socket sends
(feedback.services.feedback_record stores it; the feedback consumer does what follows)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.models import Feedback
from feedback.selectors import vote_exists
from feedback.services import MAX_COMMENT_CHARS, feedback_record
from ingestion.serializers import ErrorSerializer


class FeedbackInputSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(min_value=1, help_text="The answer (message_id of the chat's answer).")
    rating = serializers.ChoiceField(choices=[1, -1], help_text="1 thumbs up, -1 thumbs down.")
    chunk_id = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=64,
                                     help_text="Rate this passage of the answer; leave out to rate the answer.")
    reason = serializers.ChoiceField(choices=Feedback.Reason.values, required=False, allow_blank=True,
                                     allow_null=True, help_text="Why, for a thumbs down.")
    comment = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                    max_length=MAX_COMMENT_CHARS, trim_whitespace=True,
                                    help_text="Why, in words. Left out (or null), a second vote keeps the stored "
                                              "comment; an empty string clears it.")


class FeedbackOutputSerializer(serializers.ModelSerializer):
    feedback_id = serializers.IntegerField(source="pk")
    message_id = serializers.IntegerField()
    chunk_id = serializers.CharField(allow_null=True, help_text="Empty for a vote on the whole answer.")

    class Meta:
        model = Feedback
        fields = ["feedback_id", "message_id", "chunk_id", "document_id", "rating", "reason", "comment",
                  "created_at", "updated_at"]


class FeedbackApi(APIView):
    throttle_scope = "feedback"

    @extend_schema(
        request=FeedbackInputSerializer,
        responses={
            200: OpenApiResponse(FeedbackOutputSerializer, description="Your earlier vote on it, changed."),
            201: OpenApiResponse(FeedbackOutputSerializer, description="The vote, recorded."),
            400: OpenApiResponse(ErrorSerializer, description="A bad rating, reason or comment."),
            401: OpenApiResponse(ErrorSerializer, description="Send 'Authorization: Token <key>' or sign in."),
            404: OpenApiResponse(ErrorSerializer, description="No such answer among yours, or no such passage "
                                                              "in it that you may see."),
            429: OpenApiResponse(ErrorSerializer, description="Too many votes; wait Retry-After seconds."),
        },
        summary="Rate an answer or one of its passages",
        description="One vote per user per answer and passage; voting again changes it. Votes move the "
                    "passages' ranking for everyone (bounded, smoothed, decaying with age); `outdated` "
                    "asks for the document to be fetched again from its source.",
    )
    def post(self, request: Request) -> Response:
        serializer = FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changing = vote_exists(user=request.user, message_id=data["message_id"], chunk_id=data.get("chunk_id"))
        feedback = feedback_record(user=request.user, message_id=data["message_id"], rating=data["rating"],
                                   chunk_id=data.get("chunk_id"), reason=data.get("reason") or "",
                                   comment=data.get("comment"))
        return Response(FeedbackOutputSerializer(feedback).data,
                        status=status.HTTP_200_OK if changing else status.HTTP_201_CREATED)
