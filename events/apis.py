"""REST API of the events app: the CloudEvents intake (`POST /api/events/`, authenticated per
push source) and the event sinks (`/api/sinks/`, staff only)."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from config.exceptions import PayloadTooLarge
from events.intake.auth import push_source_authenticate
from events.intake.binding import EventInvalid, http_events
from events.intake.services import events_record
from events.models import EventSink
from events.serializers import (
    DeliveryOutputSerializer,
    IntakeOutputSerializer,
    SinkCreatedOutputSerializer,
    SinkInputSerializer,
    SinkOutputSerializer,
)
from events.sinks import selectors, services
from ingestion.api_schema import WWW_AUTHENTICATE, errors
from ingestion.serializers import PageQuerySerializer


def _page_query(request: Request) -> None:
    """400 for a bad page number or a parameter the list does not take."""
    PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)


class EventIntakeApi(APIView):
    """CloudEvents 1.0 over HTTP: binary (ce-* headers, the body is the data), structured
    (application/cloudevents+json) or batch (application/cloudevents-batch+json)."""

    authentication_classes: list = []  # each push source authenticates itself (events/intake/auth.py)
    permission_classes = [AllowAny]
    parser_classes: list = []  # the body is read raw: the signature covers its exact bytes

    @extend_schema(
        operation_id="events_push",
        parameters=[OpenApiParameter("source", OpenApiTypes.STR, description="The push source's name (optional).")],
        request={"application/cloudevents+json": OpenApiTypes.OBJECT,
                 "application/cloudevents-batch+json": OpenApiTypes.OBJECT, "*/*": OpenApiTypes.BINARY},
        responses={
            202: IntakeOutputSerializer, 200: OpenApiResponse(IntakeOutputSerializer, description="All duplicates."),
            400: OpenApiResponse(description="Not a valid CloudEvent 1.0 (a batch is refused whole)."),
            401: OpenApiResponse(description="No valid bearer secret or Standard Webhooks signature."),
            413: OpenApiResponse(description="The body is over EVENTS_MAX_BODY_BYTES."),
            422: OpenApiResponse(description="An event type the source does not take."),
        },
    )
    def post(self, request: Request) -> Response:
        limit = settings.EVENTS_MAX_BODY_BYTES
        try:
            declared = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes (EVENTS_MAX_BODY_BYTES); send smaller batches.")
        body = request._request.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes (EVENTS_MAX_BODY_BYTES); send smaller batches.")
        headers = {name.lower(): value for name, value in request.headers.items()}
        source = push_source_authenticate(headers=headers, body=body,
                                          source_name=request.query_params.get("source", ""))
        mode, events = http_events(headers, body)
        if len(events) > settings.EVENTS_MAX_BATCH:
            raise EventInvalid(f"A batch holds at most {settings.EVENTS_MAX_BATCH} events (EVENTS_MAX_BATCH).")
        recorded = events_record(source=source, events=events, via="http")
        answer = {"accepted": recorded.accepted, "duplicates": recorded.duplicates, "mode": mode,
                  "source": source.name}
        code = status.HTTP_200_OK if recorded.duplicates and not recorded.accepted else status.HTTP_202_ACCEPTED
        return Response(IntakeOutputSerializer(answer).data, status=code)


class _StaffApi(APIView):
    permission_classes = [IsAdminUser]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    def _sink(self, sink_id: int) -> EventSink:
        return get_object_or_404(EventSink, pk=sink_id)


class SinkListApi(_StaffApi):
    @extend_schema(operation_id="sinks_list", parameters=[PageQuerySerializer, WWW_AUTHENTICATE],
                   responses={200: SinkOutputSerializer(many=True), **errors(400, 401, 403, 404)})
    def get(self, request: Request) -> Response:
        _page_query(request)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(EventSink.objects.order_by("name"), request, view=self)
        return paginator.get_paginated_response(SinkOutputSerializer(page, many=True).data)

    @extend_schema(operation_id="sinks_create", request=SinkInputSerializer, parameters=[WWW_AUTHENTICATE],
                   responses={201: SinkCreatedOutputSerializer, **errors(400, 401, 403, 415)})
    def post(self, request: Request) -> Response:
        serializer = SinkInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sink = services.sink_create(**serializer.validated_data)
        return Response(SinkCreatedOutputSerializer(sink).data, status=status.HTTP_201_CREATED)


class SinkDetailApi(_StaffApi):
    @extend_schema(operation_id="sinks_retrieve", parameters=[WWW_AUTHENTICATE],
                   responses={200: SinkOutputSerializer, **errors(401, 403, 404)})
    def get(self, request: Request, sink_id: int) -> Response:
        return Response(SinkOutputSerializer(self._sink(sink_id)).data)

    @extend_schema(operation_id="sinks_update", request=SinkInputSerializer, parameters=[WWW_AUTHENTICATE],
                   responses={200: SinkOutputSerializer, **errors(400, 401, 403, 404, 415)})
    def patch(self, request: Request, sink_id: int) -> Response:
        sink = self._sink(sink_id)
        serializer = SinkInputSerializer(sink, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        # Only what was sent: a partial serializer would fill in the defaults of the rest.
        changes = {key: value for key, value in serializer.validated_data.items() if key in request.data}
        return Response(SinkOutputSerializer(services.sink_update(sink=sink, **changes)).data)

    @extend_schema(operation_id="sinks_destroy", parameters=[WWW_AUTHENTICATE],
                   responses={204: None, **errors(401, 403, 404)})
    def delete(self, request: Request, sink_id: int) -> Response:
        self._sink(sink_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class SinkDeliveriesApi(_StaffApi):
    @extend_schema(operation_id="sinks_deliveries", parameters=[PageQuerySerializer, WWW_AUTHENTICATE],
                   responses={200: DeliveryOutputSerializer(many=True), **errors(400, 401, 403, 404)})
    def get(self, request: Request, sink_id: int) -> Response:
        _page_query(request)
        sink = self._sink(sink_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.deliveries_of(sink=sink), request, view=self)
        return paginator.get_paginated_response(DeliveryOutputSerializer(page, many=True).data)
