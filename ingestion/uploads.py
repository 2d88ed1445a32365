"""Rules for files uploaded through the REST API: size, type, emptiness and the name.

The size limit (settings.MAX_UPLOAD_BYTES per file) is enforced while the body streams in, at
two layers:

- `UploadBodyLimitMiddleware` wraps the ASGI application. Django's ASGI handler spools the whole
  body to a temporary file before any view runs, so without it a 1 GB upload would be received
  in full before anything could refuse it. It answers 413 at once when Content-Length is over the
  limit, and otherwise counts the bytes as they arrive and answers 413 as soon as they pass it
  (also for chunked bodies that declare no length).
- `UploadSizeLimitHandler` is the first upload handler of the upload views: it refuses a declared
  length over the limit before reading, and each file as soon as its chunks pass the limit, so a
  server run under WSGI (or the test client) never reads an oversized file either.

The type is detected from the content (ingestion.parsers.detect), never from the name or the
client's Content-Type, and must be in settings.UPLOAD_ALLOWED_TYPES. The client's file name is
kept only as metadata, cleaned; the bytes are stored under a generated name
(ingestion.models.document_upload_to).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.urls import Resolver404, resolve
from rest_framework import exceptions, status

from config.exceptions import PayloadTooLarge
from ingestion.parsers import ParseError, detect

# Room for the multipart framing and the small form fields (source, title, external_id).
FORM_OVERHEAD_BYTES = 64 * 1024

SINGLE_UPLOAD_VIEW = "ingestion:documents"
BULK_UPLOAD_VIEW = "ingestion:documents-bulk"


class UnsupportedUploadType(exceptions.APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = "Unsupported file type."
    default_code = "unsupported_type"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size:,} bytes"


def file_too_large(name: str = "") -> PayloadTooLarge:
    what = f"The file {name!r}" if name else "The file"
    return PayloadTooLarge(f"{what} is larger than the upload limit of {_megabytes(settings.MAX_UPLOAD_BYTES)} "
                           f"(MAX_UPLOAD_BYTES); split it or ask an administrator to raise the limit.")


def body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {_megabytes(limit)} for this endpoint; "
                           f"each file may be at most {_megabytes(settings.MAX_UPLOAD_BYTES)} (MAX_UPLOAD_BYTES).")


def upload_body_limit(view_name: str) -> int | None:
    """The most bytes a request body to the upload view `view_name` may have, None for others."""
    if view_name == SINGLE_UPLOAD_VIEW:
        return settings.MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
    if view_name == BULK_UPLOAD_VIEW:
        return settings.MAX_BULK_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
    return None


class UploadSizeLimitHandler(FileUploadHandler):
    """Put first in `request.upload_handlers`: it passes chunks on to Django's own handlers
    (memory, then temporary file) and raises 413 as soon as a limit is passed."""

    def __init__(self, request=None, *, max_file_bytes: int, max_body_bytes: int) -> None:
        super().__init__(request)
        self.max_file_bytes = max_file_bytes
        self.max_body_bytes = max_body_bytes
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > self.max_body_bytes:
            raise body_too_large(self.max_body_bytes)
        return None  # let the multipart parser (and the handlers after this one) do the work

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_file_bytes:
            raise file_too_large(upload_filename(self.file_name or ""))
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file object


class UploadBodyLimitMiddleware:
    """ASGI middleware: refuse an upload body over its limit while it streams in (see above)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        limit = self._limit(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _BodyTooLarge:
            # Django reads the whole body before it starts a response, so nothing is sent yet.
            await _refuse(send, limit)

    @staticmethod
    def _limit(scope) -> int | None:
        if scope.get("type") != "http":
            return None
        return request_body_limit(method=scope.get("method", ""), path=scope.get("path", ""))


def request_body_limit(*, method: str, path: str) -> int | None:
    """The most bytes the body of a `method` request to `path` may have, None for no limit here."""
    if method != "POST":
        return None
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return upload_body_limit(match.view_name or "")


class _BodyTooLarge(Exception):
    pass


def daphne_body_limit_install() -> None:
    """Make daphne refuse an upload body over its limit while it arrives.

    daphne (Twisted's http.Request) writes a request's whole body to a temporary file before the
    ASGI application sees any of it, so UploadBodyLimitMiddleware alone would refuse a 1 GB upload
    only once the 1 GB was on disk (found by tests/security/test_uploads.py). This hooks daphne's
    request: a declared Content-Length over the view's limit is answered 413 before the body is
    read, and a body without one is cut off with 413 once it passes the limit. Idempotent; does
    nothing where daphne is not installed."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return
    if getattr(WebRequest, "freshet_body_limit", False):
        return
    got_length, content_chunk = WebRequest.gotLength, WebRequest.handleContentChunk

    def refuse(request, limit: int) -> None:
        request.freshet_refused = True
        body = json.dumps({"detail": str(body_too_large(limit).detail)}).encode()
        request.channel.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        request.channel.transport.loseConnection()

    def limited_got_length(request, length) -> None:
        channel = request.channel
        method = getattr(channel, "_command", b"").decode("latin-1")
        path = getattr(channel, "_path", b"").decode("latin-1").split("?", 1)[0]
        request.freshet_limit = request_body_limit(method=method, path=path)
        request.freshet_received, request.freshet_refused = 0, False
        if request.freshet_limit is not None and length is not None and length > request.freshet_limit:
            refuse(request, request.freshet_limit)
            return
        got_length(request, length)

    def limited_content_chunk(request, data: bytes) -> None:
        if getattr(request, "freshet_refused", False):
            return
        request.freshet_received = getattr(request, "freshet_received", 0) + len(data)
        limit = getattr(request, "freshet_limit", None)
        if limit is not None and request.freshet_received > limit:
            refuse(request, limit)
            return
        content_chunk(request, data)

    WebRequest.gotLength = limited_got_length
    WebRequest.handleContentChunk = limited_content_chunk
    WebRequest.freshet_body_limit = True


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send, limit: int) -> None:
    body = json.dumps({"detail": str(body_too_large(limit).detail)}).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


# --- Checking one uploaded file -------------------------------------------------------------

_UNSAFE_NAME_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def upload_filename(name: str) -> str:
    """The client's file name cleaned for display and for use as an external id: no folders, no
    control characters, at most 255 characters. It is never used as a storage path."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME_CHARACTERS.sub("", name).strip().strip(".").strip()
    return name[:255] or "upload"


@dataclass(frozen=True)
class CheckedUpload:
    content: bytes
    filename: str
    media_type: str


def upload_check(file: UploadedFile) -> CheckedUpload:
    """Read an uploaded file (already under the size limit) and check it: 413 when over the limit
    (defence in depth), 400 when empty, 415 when its content is not an allowed type."""
    filename = upload_filename(file.name or "")
    if file.size is not None and file.size > settings.MAX_UPLOAD_BYTES:
        raise file_too_large(filename)
    file.seek(0)
    content = file.read()
    if len(content) > settings.MAX_UPLOAD_BYTES:
        raise file_too_large(filename)
    if not content:
        raise exceptions.ValidationError({"file": [f"The file {filename!r} is empty; upload a file with content."]})
    allowed = settings.UPLOAD_ALLOWED_TYPES
    try:
        media_type = detect(content, filename)
    except ParseError as error:
        raise UnsupportedUploadType(f"{filename!r}: {error} Allowed types: {', '.join(allowed)}.") from None
    if media_type not in allowed:
        raise UnsupportedUploadType(
            f"{filename!r} is {media_type}, which this server does not accept. Allowed types: {', '.join(allowed)}."
        )
    return CheckedUpload(content=content, filename=filename, media_type=media_type)
