"""REST API for sources and documents: thin views over ingestion.selectors and ingestion.services.

Access: every read goes through a selector that applies the caller's access (public sources,
the caller's groups, staff everything); what the caller may not see answers 404, never 403, so
ids leak nothing. Changing sources and reindexing are for staff (403 for others). Anyone who may
see a source of kind `upload` may upload new documents into it; replacing (uploading with the
same external id) or deleting a document follows selectors.document_may_change, applied by the
services: its uploader, the editors of its source, or staff; others get 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import IntegrityError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from config.exceptions import error_message
from ingestion import selectors, services
from ingestion.api_schema import (
    DOCUMENT_FORBIDDEN,
    DOCUMENT_FORBIDDEN_MEANING,
    ERROR_MEANINGS,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    errors,
)
from ingestion.models import Document, Source
from ingestion.serializers import (
    BulkRejectedSerializer,
    ChunkOutputSerializer,
    DocumentBulkOutputSerializer,
    DocumentBulkUploadInputSerializer,
    DocumentFilterSerializer,
    DocumentOutputSerializer,
    DocumentUploadInputSerializer,
    PageQuerySerializer,
    SourceInputSerializer,
    SourceOutputSerializer,
)
from ingestion.uploads import (
    BULK_UPLOAD_VIEW,
    SINGLE_UPLOAD_VIEW,
    UploadSizeLimitHandler,
    upload_body_limit,
    upload_check,
    upload_filename,
)

# --- Shared view helpers --------------------------------------------------------------------


def _query(request: Request, serializer_class: type[PageQuerySerializer] = PageQuerySerializer) -> dict:
    """A list's query parameters, validated (400 for a bad or unknown one)."""
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def _paginated(*, queryset, serializer_class, request: Request, view: APIView) -> Response:
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    data = serializer_class(page, many=True, context={"request": request}).data
    return paginator.get_paginated_response(data)


def _require_staff(request: Request, action: str) -> None:
    if not request.user.is_staff:
        raise exceptions.PermissionDenied(f"Only staff may {action}.")


def _source_or_404(request: Request, source_id: int) -> Source:
    source = selectors.source_get(user=request.user, source_id=source_id)
    if source is None:
        raise exceptions.NotFound(f"There is no source {source_id}, or you may not see it.")
    return source


def _document_or_404(request: Request, document_id: int) -> Document:
    document = selectors.document_get(user=request.user, document_id=document_id)
    if document is None:
        raise exceptions.NotFound(f"There is no document {document_id}, or you may not see it.")
    return document


def _upload_source(request: Request, source_id: int) -> Source:
    source = _source_or_404(request, source_id)
    refusal = services.source_upload_refusal(source)
    if refusal:
        # Connector-fed sources (url, feed, folder, push) own their documents: a sync would
        # overwrite or remove what was uploaded beside it.
        raise exceptions.ValidationError({"source": [refusal]})
    return source


@contextmanager
def _name_taken_is_400(name: str | None) -> Iterator[None]:
    # The serializer checks the name is free; two requests racing for it meet the unique index.
    try:
        yield
    except IntegrityError:
        raise exceptions.ValidationError({"name": [f"A source named {name!r} already exists; choose another name."]}) \
            from None


class _UploadLimitMixin:
    """Puts the streaming size check first in the upload handlers, before anything reads the body
    (the session CSRF check reads it during authentication)."""

    upload_view_name: str

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            request.upload_handlers.insert(0, UploadSizeLimitHandler(
                request, max_file_bytes=settings.MAX_UPLOAD_BYTES,
                max_body_bytes=upload_body_limit(self.upload_view_name),
            ))
        return super().initialize_request(request, *args, **kwargs)


# --- Sources --------------------------------------------------------------------------------


class SourceListApi(APIView):
    parser_classes = [JSONParser]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(
        operation_id="sources_list", tags=["sources"], summary="List the sources you may see",
        parameters=[PageQuerySerializer, WWW_AUTHENTICATE],
        responses={200: SourceOutputSerializer(many=True), **errors(400, 401, 404)},
    )
    def get(self, request: Request) -> Response:
        _query(request)
        return _paginated(queryset=selectors.source_list(user=request.user),
                          serializer_class=SourceOutputSerializer, request=request, view=self)

    @extend_schema(
        operation_id="sources_create", tags=["sources"], summary="Create a source (staff)",
        request=SourceInputSerializer, parameters=[WWW_AUTHENTICATE],
        responses={201: SourceOutputSerializer, **errors(400, 401, 403, 415)},
    )
    def post(self, request: Request) -> Response:
        _require_staff(request, "create sources")
        serializer = SourceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with _name_taken_is_400(serializer.validated_data.get("name")):
            source = services.source_create(**serializer.validated_data)
        source = selectors.source_get(user=request.user, source_id=source.pk)
        # "created": write-only config (a push source's generated secret) is shown this once.
        return Response(SourceOutputSerializer(source, context={"request": request, "created": True}).data,
                        status=status.HTTP_201_CREATED)


class SourceDetailApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="sources_retrieve", tags=["sources"], summary="A source, with its document counts",
        parameters=[WWW_AUTHENTICATE], responses={200: SourceOutputSerializer, **errors(401, 404)},
    )
    def get(self, request: Request, source_id: int) -> Response:
        source = _source_or_404(request, source_id)
        return Response(SourceOutputSerializer(source, context={"request": request}).data)

    @extend_schema(
        operation_id="sources_partial_update", tags=["sources"], summary="Change a source (staff)",
        description="Send only the fields to change. `groups` replaces the source's groups. Changing "
                    "access or chunking updates the index in the background.",
        request=SourceInputSerializer(partial=True), parameters=[WWW_AUTHENTICATE],
        responses={200: SourceOutputSerializer, **errors(400, 401, 403, 404, 415)},
    )
    def patch(self, request: Request, source_id: int) -> Response:
        source = _source_or_404(request, source_id)
        _require_staff(request, "change sources")
        serializer = SourceInputSerializer(data=request.data, partial=True, context={"source": source})
        serializer.is_valid(raise_exception=True)
        with _name_taken_is_400(serializer.validated_data.get("name")):
            services.source_update(source=source, **serializer.validated_data)
        source = selectors.source_get(user=request.user, source_id=source.pk)
        return Response(SourceOutputSerializer(source, context={"request": request}).data)

    @extend_schema(
        operation_id="sources_destroy", tags=["sources"], summary="Delete a source and its documents (staff)",
        description="Its documents and their chunks are removed from the index in the background.",
        parameters=[WWW_AUTHENTICATE], responses={204: None, **errors(401, 403, 404)},
    )
    def delete(self, request: Request, source_id: int) -> Response:
        source = _source_or_404(request, source_id)
        _require_staff(request, "delete sources")
        services.source_delete(source=source)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Documents ------------------------------------------------------------------------------


class DocumentListApi(_UploadLimitMixin, APIView):
    parser_classes = [MultiPartParser]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS
    upload_view_name = SINGLE_UPLOAD_VIEW

    @property
    def throttle_scope(self) -> str | None:
        # Only uploads count against the upload rate; listing is not throttled.
        return "uploads" if self.request.method == "POST" else None

    @extend_schema(
        operation_id="documents_list", tags=["documents"], summary="List the documents you may see",
        description="Newest first. Filter by `source` (404 if you may not see it) and `status`.",
        parameters=[DocumentFilterSerializer, WWW_AUTHENTICATE],
        responses={200: DocumentOutputSerializer(many=True), **errors(400, 401, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = _query(request, DocumentFilterSerializer)
        source_id = filters.get("source")
        if source_id is not None:
            _source_or_404(request, source_id)
        documents = selectors.document_list(user=request.user, source_id=source_id,
                                            status=filters.get("status"))
        return _paginated(queryset=documents, serializer_class=DocumentOutputSerializer, request=request, view=self)

    @extend_schema(
        operation_id="documents_upload", tags=["documents"], summary="Upload a file as a document",
        description=(
            "Multipart upload into a source of kind `upload` that you may see. The document's "
            "`external_id` defaults to the file's name, so uploading a file with the same name (or the "
            "same `external_id`) again updates that document instead of adding another: 201 when it "
            "was created, 200 when it existed (its version goes up only if something changed), 403 "
            "when it exists and you may not change it (only its uploader, the editors of its source "
            "and staff may). A new document records you as `uploaded_by`. The "
            "document is then parsed, chunked, embedded and indexed in the background: poll "
            "`GET /api/documents/{id}/` until `status` is `indexed` or `failed`. The type is detected "
            "from the content; the file name is kept as metadata only. Throttled per user (scope "
            "`uploads`, THROTTLE_UPLOADS)."
        ),
        request={"multipart/form-data": DocumentUploadInputSerializer},
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            201: OpenApiResponse(DocumentOutputSerializer, description="Created."),
            200: OpenApiResponse(DocumentOutputSerializer, description="An existing document, updated."),
            403: DOCUMENT_FORBIDDEN,
            **errors(400, 401, 404, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = DocumentUploadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        source = _upload_source(request, data["source"])
        upload = upload_check(data["file"])
        result = services.document_ingest(
            source=source, external_id=data.get("external_id", "").strip() or upload.filename,
            content=upload.content, filename=upload.filename, title=data.get("title", "").strip(),
            user=request.user,
        )
        return Response(DocumentOutputSerializer(result.document).data,
                        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class DocumentBulkUploadApi(_UploadLimitMixin, APIView):
    parser_classes = [MultiPartParser]
    throttle_scope = "uploads"
    upload_view_name = BULK_UPLOAD_VIEW

    @extend_schema(
        operation_id="documents_bulk_upload", tags=["documents"], summary="Upload many files at once",
        description=(
            "Each file becomes (or updates) the document whose `external_id` is its file name. Files "
            "are checked one by one: those refused (empty, unsupported type, a name given twice, an "
            "existing document you may not change) are "
            "listed in `rejected` with the status they would have got alone, and the rest are stored "
            "(201). When none is accepted the answer is an error: the status all rejections share, "
            "else 400. A file over MAX_UPLOAD_BYTES, or a body over MAX_BULK_UPLOAD_BYTES, stops the "
            "whole request with 413. At most BULK_UPLOAD_MAX_FILES files per request. One request "
            "counts once against the `uploads` throttle."
        ),
        request={"multipart/form-data": DocumentBulkUploadInputSerializer},
        parameters=[WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            201: DocumentBulkOutputSerializer,
            400: OpenApiResponse(BulkRejectedSerializer, description=ERROR_MEANINGS[400]),
            403: OpenApiResponse(BulkRejectedSerializer, description=DOCUMENT_FORBIDDEN_MEANING),
            415: OpenApiResponse(BulkRejectedSerializer, description=ERROR_MEANINGS[415]),
            **errors(401, 404, 413, 429),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = DocumentBulkUploadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        source = _upload_source(request, serializer.validated_data["source"])
        documents: list[Document] = []
        rejected: list[dict] = []
        seen: set[str] = set()
        for file in serializer.validated_data["files"]:
            name = upload_filename(file.name or "")
            if name in seen:
                rejected.append({"filename": name, "status": 400,
                                 "detail": f"{name!r} was sent twice in this request; rename one of them."})
                continue
            seen.add(name)
            try:
                upload = upload_check(file)
            except exceptions.APIException as error:
                rejected.append({"filename": name, "status": error.status_code, "detail": error_message(error.detail)})
                continue
            try:
                result = services.document_ingest(source=source, external_id=upload.filename,
                                                  content=upload.content, filename=upload.filename,
                                                  user=request.user)
            except services.DocumentChangeForbidden as error:
                rejected.append({"filename": name, "status": error.status, "detail": error.message})
                continue
            documents.append(result.document)
        if not documents:
            statuses = {item["status"] for item in rejected}
            code = statuses.pop() if len(statuses) == 1 else status.HTTP_400_BAD_REQUEST
            return Response({"detail": f"None of the {len(rejected)} files was accepted; see `rejected`.",
                             "rejected": rejected}, status=code)
        return Response(DocumentBulkOutputSerializer({"documents": documents, "rejected": rejected}).data,
                        status=status.HTTP_201_CREATED)


class DocumentDetailApi(APIView):
    @extend_schema(
        operation_id="documents_retrieve", tags=["documents"], summary="A document and its processing status",
        description="`status` goes pending → processing → indexed, or failed with the reason in `error`.",
        parameters=[WWW_AUTHENTICATE], responses={200: DocumentOutputSerializer, **errors(401, 404)},
    )
    def get(self, request: Request, document_id: int) -> Response:
        return Response(DocumentOutputSerializer(_document_or_404(request, document_id)).data)

    @extend_schema(
        operation_id="documents_destroy", tags=["documents"], summary="Delete a document",
        description="Its chunks are removed from the index in the background. Only its uploader, the "
                    "editors of its source (`editor_groups`) and staff may delete a document (403 for "
                    "others who may see it).",
        parameters=[WWW_AUTHENTICATE], responses={204: None, 403: DOCUMENT_FORBIDDEN, **errors(401, 404)},
    )
    def delete(self, request: Request, document_id: int) -> Response:
        services.document_delete(document=_document_or_404(request, document_id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentChunksApi(APIView):
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(
        operation_id="documents_chunks", tags=["documents"], summary="The chunks of a document, in order",
        parameters=[PageQuerySerializer, WWW_AUTHENTICATE],
        responses={200: ChunkOutputSerializer(many=True), **errors(400, 401, 404)},
    )
    def get(self, request: Request, document_id: int) -> Response:
        document = _document_or_404(request, document_id)
        _query(request)
        return _paginated(queryset=selectors.chunks_for_document(document=document),
                          serializer_class=ChunkOutputSerializer, request=request, view=self)


class DocumentReindexApi(APIView):
    @extend_schema(
        operation_id="documents_reindex", tags=["documents"], summary="Run the pipeline again (staff)",
        description="Parses, chunks, embeds and indexes the document again even if it did not change; "
                    "answers at once with the document (status pending, version + 1).",
        request=None, parameters=[WWW_AUTHENTICATE],
        responses={202: DocumentOutputSerializer, **errors(401, 403, 404)},
    )
    def post(self, request: Request, document_id: int) -> Response:
        document = _document_or_404(request, document_id)
        _require_staff(request, "reindex documents")
        document = services.document_reindex(document=document)
        return Response(DocumentOutputSerializer(document).data, status=status.HTTP_202_ACCEPTED)
