"""Upload rules: the size limit (while streaming), the type from the content, empty files, and
per-user throttling."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from ingestion.models import Document
from ingestion.uploads import FORM_OVERHEAD_BYTES, UploadSizeLimitHandler
from tests.samples import PNG_BYTES, pdf_bytes

DOCUMENTS = "/api/documents/"


def upload(client, source, content: bytes, name: str = "notes.txt"):
    return client.post(DOCUMENTS, {"source": source.pk, "file": SimpleUploadedFile(name, content)},
                       format="multipart")


# --- size ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_file_over_the_limit_is_413_and_not_stored(as_member, public_source, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    response = upload(as_member, public_source, b"x" * 5000)
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"] and "'notes.txt'" in response.json()["detail"]
    assert not Document.objects.exists()

    assert upload(as_member, public_source, b"x" * 1000).status_code == 201, "the limit itself is allowed"


@pytest.mark.django_db
def test_a_declared_body_over_the_limit_is_refused_before_it_is_parsed(as_member, public_source, settings):
    settings.MAX_UPLOAD_BYTES = 10
    response = upload(as_member, public_source, b"x" * (FORM_OVERHEAD_BYTES + 100))
    assert response.status_code == 413
    assert response.json()["detail"].startswith("The request body is larger than the limit")
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_a_bulk_upload_stops_at_the_first_file_over_the_limit(as_member, public_source, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    files = [SimpleUploadedFile("small.txt", b"fine"), SimpleUploadedFile("big.txt", b"x" * 5000)]
    response = as_member.post("/api/documents/bulk/", {"source": public_source.pk, "files": files},
                              format="multipart")
    assert response.status_code == 413 and "'big.txt'" in response.json()["detail"]
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_the_limit_holds_for_browser_sessions_whose_csrf_check_reads_the_body(member, public_source, settings):
    # The session's CSRF check parses the form during authentication, before the view runs:
    # the size check must already be in place then.
    settings.MAX_UPLOAD_BYTES = 1000
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(member)
    browser.get("/admin/login/")  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value

    too_big = browser.post(DOCUMENTS, {"source": public_source.pk, "file": SimpleUploadedFile("a.txt", b"x" * 5000),
                                       "csrfmiddlewaretoken": token}, format="multipart")
    assert too_big.status_code == 413
    no_token = browser.post(DOCUMENTS, {"source": public_source.pk, "file": SimpleUploadedFile("a.txt", b"ok")},
                            format="multipart")
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["detail"]
    fine = browser.post(DOCUMENTS, {"source": public_source.pk, "file": SimpleUploadedFile("a.txt", b"ok"),
                                    "csrfmiddlewaretoken": token}, format="multipart")
    assert fine.status_code == 201


class CountingStream(io.BytesIO):
    """The request body as the parser sees it, counting what it reads."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def test_the_upload_handler_stops_reading_a_file_once_it_passes_the_limit():
    body = encode_multipart(BOUNDARY, {"source": "1", "file": SimpleUploadedFile("big.txt", b"x" * (8 << 20))})
    stream = CountingStream(body)
    meta = {"CONTENT_TYPE": MULTIPART_CONTENT, "CONTENT_LENGTH": str(len(body))}
    handlers = [UploadSizeLimitHandler(max_file_bytes=100_000, max_body_bytes=len(body)), MemoryFileUploadHandler()]

    with pytest.raises(APIException) as raised:
        MultiPartParser(meta, stream, handlers).parse()

    assert raised.value.status_code == 413
    # Django reads in 64 KiB chunks: it stops within a few of them past the limit, not at 8 MB.
    assert stream.consumed < 1_000_000


# The ASGI layer: the real Freshet application behind UploadBodyLimitMiddleware, fed real ASGI
# messages. Refused requests never reach Django, so no database is involved.


def asgi_request(path: str, *, body_chunks, headers=(), method: str = "POST") -> tuple[dict, int]:
    from config.asgi import application

    sent: list[dict] = []
    received = 0
    chunks = iter(body_chunks)

    finished = False

    async def receive():
        nonlocal received, finished
        if finished:  # the client stays connected until the response is sent
            await asyncio.Future()
        chunk = next(chunks, None)
        if chunk is None:
            finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "http_version": "1.1", "server": ("testserver", 80),
             "client": ("127.0.0.1", 5000), "headers": [(b"host", b"testserver"), *headers]}
    asyncio.run(application(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "headers": dict(start["headers"]), "body": body}, received


def endless(chunk_size: int = 64 * 1024, total: int = 1 << 30):
    """A 1 GiB body, produced only as far as it is read."""
    for _ in range(total // chunk_size):
        yield b"x" * chunk_size


def test_the_server_refuses_a_declared_1gb_upload_without_reading_it(settings):
    settings.MAX_UPLOAD_BYTES = 1 << 20
    response, chunks_read = asgi_request(DOCUMENTS, body_chunks=endless(),
                                         headers=[(b"content-length", str(1 << 30).encode())])
    assert response["status"] == 413 and chunks_read == 0
    assert response["headers"][b"content-type"] == b"application/json"
    assert "larger than the limit of 1.1 MB" in json.loads(response["body"])["detail"]


def test_the_server_stops_reading_an_undeclared_body_once_it_passes_the_limit(settings):
    settings.MAX_UPLOAD_BYTES = 1 << 20
    response, chunks_read = asgi_request("/api/documents/bulk/", body_chunks=endless())
    assert response["status"] == 413
    limit_chunks = (settings.MAX_BULK_UPLOAD_BYTES + FORM_OVERHEAD_BYTES) // (64 * 1024)
    assert chunks_read == limit_chunks + 1, "reading stops at the first chunk past the limit"
    assert "detail" in json.loads(response["body"])


def test_a_body_under_the_limit_reaches_django_whole(settings):
    settings.MAX_UPLOAD_BYTES = 1 << 20
    response, chunks_read = asgi_request(DOCUMENTS, body_chunks=[b"x" * 1000] * 5,
                                         headers=[(b"content-length", b"5000")])
    # Django read every chunk and DRF answered (anonymous: 401), so nothing was cut short.
    assert chunks_read == 5 and response["status"] == 401


def test_bodies_of_other_endpoints_are_not_limited(settings):
    settings.MAX_UPLOAD_BYTES = 10
    response, chunks_read = asgi_request("/api/sources/", body_chunks=[b"x" * 1000] * 3)
    assert chunks_read == 3 and response["status"] == 401


# --- type and emptiness ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("photo.png", PNG_BYTES, "a PNG image"),
        ("photo.txt", PNG_BYTES, "a PNG image"),  # the name does not matter, the content does
        ("program.exe", b"MZ\x90\x00" + bytes(200), "Windows executable"),
        ("junk.bin", bytes(range(256)) * 16, "binary content"),
        ("archive.zip", b"PK\x03\x04" + bytes(100), "corrupt"),
    ],
)
def test_content_of_an_unsupported_type_is_415(as_member, public_source, name, content, reason):
    response = upload(as_member, public_source, content, name)
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert reason in detail and "Allowed types:" in detail
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_a_supported_type_outside_the_allowlist_is_415(as_member, public_source, settings):
    settings.UPLOAD_ALLOWED_TYPES = ["text/plain"]
    response = upload(as_member, public_source, pdf_bytes(["Hello."]), "hello.pdf")
    assert response.status_code == 415
    assert "is application/pdf" in response.json()["detail"]
    assert upload(as_member, public_source, b"Hello.", "hello.txt").status_code == 201


@pytest.mark.django_db
def test_an_empty_file_is_400(as_member, public_source):
    response = upload(as_member, public_source, b"", "empty.txt")
    assert response.status_code == 400
    assert "empty" in response.json()["detail"] and "file" in response.json()["errors"]
    assert not Document.objects.exists()


# --- throttling ------------------------------------------------------------------------------


@pytest.fixture
def tight_rates(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"uploads": "2/min", "search": "1/min"}}


@pytest.mark.django_db
def test_uploads_are_throttled_per_user_with_retry_after(as_member, as_outsider, public_source, tight_rates):
    assert [upload(as_member, public_source, f"doc {i}".encode(), f"{i}.txt").status_code
            for i in range(2)] == [201, 201]

    throttled = upload(as_member, public_source, b"one more", "3.txt")

    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert "throttled" in throttled.json()["detail"].lower()
    assert as_member.get(DOCUMENTS).status_code == 200, "reading is not throttled"
    assert upload(as_outsider, public_source, b"another user", "4.txt").status_code == 201, "per user"


@pytest.mark.django_db
def test_the_search_scope_is_throttled_per_user(member, outsider, tight_rates):
    class Search(APIView):  # how the search endpoint opts in
        throttle_scope = "search"

        def get(self, request):
            return Response({"hits": []})

    def search(user):
        request = APIRequestFactory().get("/api/search/?q=x")
        force_authenticate(request, user=user)
        return Search.as_view()(request)

    assert search(member).status_code == 200
    throttled = search(member)
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert search(outsider).status_code == 200


@pytest.mark.parametrize("value", ["fast", "10", "10/fortnight", "0/min", "-1/s"])
def test_a_malformed_throttle_rate_stops_start_up_naming_the_variable(monkeypatch, value):
    from config import settings as project_settings

    monkeypatch.setenv("THROTTLE_UPLOADS", value)
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_UPLOADS"):
        project_settings._throttle_rate("THROTTLE_UPLOADS", "120/min")


def test_a_well_formed_throttle_rate_is_read(monkeypatch):
    from config import settings as project_settings

    monkeypatch.setenv("THROTTLE_SEARCH", "30/hour")
    assert project_settings._throttle_rate("THROTTLE_SEARCH", "60/min") == "30/hour"
