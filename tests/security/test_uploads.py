"""Uploads (issue 14): a client's file name never becomes a path, an executable under a document's
name is refused by its content, markup in a name or title never runs on the document page, and an
oversized body is refused by the real server (daphne) while it streams, without being spooled to
disk."""

from __future__ import annotations

import os
import select
import socket
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from ingestion.models import Document
from tests.conftest import client_for
from tests.factories import SourceFactory, UserFactory
from tests.security.conftest import UPLOAD_LIMIT

pytestmark = pytest.mark.django_db

DOCUMENTS = "/api/documents/"


@pytest.fixture
def uploader(db):
    return UserFactory(username="uploader")


@pytest.fixture
def source(db):
    return SourceFactory(name="inbox", public=True)


def upload(client, source, name: str, content: bytes, **fields):
    return client.post(DOCUMENTS, {"source": source.pk, "file": SimpleUploadedFile(name, content), **fields},
                       format="multipart")


# --- names ------------------------------------------------------------------------------------
TRAVERSALS = [
    "../../../../{target}",
    "..\\..\\..\\..\\{target}",
    "/{target}",
    "....//....//{target}",
    "..%2f..%2f{target}",
    "./../{target}\x00.pdf",
    "\u2025/\u2025/{target}",  # two-dot leaders, which NFKC would fold to ".."
    "C:\\Windows\\System32\\{target}",
]


@pytest.mark.parametrize("pattern", TRAVERSALS)
def test_a_path_in_the_file_name_never_becomes_a_path(uploader, source, pattern, tmp_path):
    target = tmp_path / "pwned.txt"
    name = pattern.format(target=str(target).lstrip("/"))
    response = upload(client_for(uploader), source, name, b"Harmless words about glaciers.")

    assert response.status_code == 201, response.content
    document = Document.objects.get(pk=response.json()["id"])
    stored = Path(document.file.path).resolve()
    assert stored.is_relative_to(Path(settings.MEDIA_ROOT).resolve() / "documents")
    assert stored.name != "pwned.txt" and not target.exists()
    for kept in (document.filename, document.external_id, response.json()["filename"]):
        assert "/" not in kept and "\\" not in kept and "\x00" not in kept and not kept.startswith(".."), kept


def test_a_very_long_name_is_cut_not_an_error(uploader, source):
    response = upload(client_for(uploader), source, "a" * 5000 + ".txt", b"Words.")
    assert response.status_code == 201, response.content
    assert len(response.json()["filename"]) <= 255


def test_bulk_uploads_clean_names_the_same_way(uploader, source, tmp_path):
    target = tmp_path / "pwned.txt"
    response = client_for(uploader).post("/api/documents/bulk/", {
        "source": source.pk,
        "files": [SimpleUploadedFile(f"../../../..{target}", b"One."), SimpleUploadedFile("ok.txt", b"Two.")],
    }, format="multipart")
    assert response.status_code in (200, 201, 207), response.content
    for document in Document.objects.filter(source=source):
        assert Path(document.file.path).resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve())
        assert "/" not in document.filename
    assert not target.exists()


# --- content, not names, decides the type -----------------------------------------------------------
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
EXECUTABLES = [
    ("report.pdf", ELF),
    ("notes.txt", ELF),
    ("letter.docx", b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 200),  # a Windows PE
    ("slides.pdf", b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 200),  # a Mach-O binary
    ("paper.pdf", b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\x00" * 200),  # a Java class / fat Mach-O
    ("module.md", b"\x00asm\x01\x00\x00\x00" + b"\x00" * 200),  # WebAssembly
    ("archive.docx", b"PK\x03\x04" + b"\x00" * 200),  # a broken zip posing as DOCX
]


@pytest.mark.parametrize(("name", "content"), EXECUTABLES, ids=[n for n, _ in EXECUTABLES])
def test_an_executable_under_a_documents_name_is_refused(uploader, source, name, content):
    response = upload(client_for(uploader), source, name, content)
    assert response.status_code == 415, (response.status_code, response.content)
    assert "detail" in response.json()
    assert not Document.objects.filter(source=source).exists()


def test_a_zip_that_is_not_a_docx_is_refused(uploader, source, tmp_path):
    import zipfile

    path = tmp_path / "payload.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("payload.exe", ELF)
        archive.writestr("[Content_Types].xml", "<Types/>")
    response = upload(client_for(uploader), source, "payload.docx", path.read_bytes())
    assert response.status_code == 415, response.content


def test_markup_in_a_name_or_title_is_shown_as_text_on_the_document_page(uploader, source):
    script = "<script>alert(document.cookie)</script>"
    response = upload(client_for(uploader), source, f"{script}.txt", f"Body {script} text.".encode(),
                      title=f"Title {script}")
    assert response.status_code == 201, response.content
    browser = client_for(None)
    browser.force_login(uploader)
    page = browser.get(f"/documents/{response.json()['id']}/")
    assert page.status_code == 200
    assert script not in page.content.decode()
    assert "&lt;script&gt;" in page.content.decode()


# --- oversized bodies, against the real server ---------------------------------------------------
def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _spooled_bytes(pid: int) -> int:
    """Bytes in the anonymous temporary files daphne holds open (a spooled body is one: deleted
    but open, so it shows in /proc, not in any folder). Files it merely reads from /tmp (an
    exported encoder graph) are not spooled bodies."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if "(deleted)" in target:
                total += os.stat(fd).st_size
        except (FileNotFoundError, PermissionError):
            continue
    return total


def _stream_upload(server, token: str, *, declared: int | None, send: int) -> tuple[bytes, int, int]:
    """POST a multipart upload of `send` bytes to daphne over a raw socket, declaring `declared`
    as Content-Length (None: chunked), and stop at the server's first answer. Returns the answer,
    how much went out, and the most bytes daphne had spooled to temporary files meanwhile."""
    boundary = "freshetboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\n").encode()
    headers = [f"POST {DOCUMENTS} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Authorization: Token {token}",
               f"Content-Type: multipart/form-data; boundary={boundary}"]
    headers.append(f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked")
    sent, spooled, reply = 0, 0, b""
    piece = b"x" * 65536
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        try:
            while sent < send:
                readable, _, _ = select.select([connection], [], [], 0)
                if readable:
                    break  # the server answered before the body was all sent
                data = (head if sent == 0 else b"") + piece
                connection.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n" if declared is None else data)
                sent += len(data)
                if sent % (16 * len(piece)) < len(piece):
                    spooled = max(spooled, _spooled_bytes(server.pid))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and hung up
        spooled = max(spooled, _spooled_bytes(server.pid))
        try:
            while chunk := connection.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return reply, sent, spooled


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("declared", [None, 1024 * 1024 * 1024], ids=["chunked", "declared-1GB"])
def test_an_oversized_body_is_413_without_filling_the_disk(daphne_server, declared):
    user = UserFactory(username=f"big-{declared}")
    SourceFactory(name=f"big-{declared}", public=True)
    token, _ = Token.objects.get_or_create(user=user)
    before = _folder_bytes(daphne_server.tmpdir)
    reply, sent, spooled = _stream_upload(daphne_server, token.key, declared=declared, send=64 * UPLOAD_LIMIT)

    assert reply.startswith(b"HTTP/1.1 413"), (sent, spooled, reply[:300])
    assert b"MAX_UPLOAD_BYTES" in reply  # the message says which limit
    assert spooled < 2 * UPLOAD_LIMIT, f"daphne spooled {spooled} bytes of the body to disk"
    assert _folder_bytes(daphne_server.tmpdir) - before < UPLOAD_LIMIT
    assert sent < 8 * UPLOAD_LIMIT, f"the server took {sent} bytes before refusing"
    assert not Document.objects.filter(source__name=f"big-{declared}").exists()
