"""The document endpoints: upload, bulk upload, list, retrieve, chunks, delete, reindex."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.pagination import PageNumberPagination

from events.models import Event
from ingestion.models import Chunk, Document, Source
from ingestion.services import document_ingest
from tests.factories import SourceFactory
from tests.samples import PNG_BYTES, docx_bytes, pdf_bytes

pytestmark = pytest.mark.django_db

DOCUMENTS = "/api/documents/"
BULK = "/api/documents/bulk/"


def upload(client, source, content: bytes = b"Glaciers carve valleys.", name: str = "notes.txt", **fields):
    return client.post(DOCUMENTS, {"source": getattr(source, "pk", source),
                                   "file": SimpleUploadedFile(name, content), **fields}, format="multipart")


def detail(document) -> str:
    return f"/api/documents/{getattr(document, 'pk', document)}/"


# --- upload ----------------------------------------------------------------------------------


def test_it_uploads_a_file_as_a_pending_document(as_member, public_source):
    response = upload(as_member, public_source, title="Glaciers")

    assert response.status_code == 201, response.json()
    body = response.json()
    document = Document.objects.get(pk=body["id"])
    assert (body["status"], body["version"], body["source"]) == ("pending", 1, public_source.pk)
    assert (body["external_id"], body["filename"], body["title"]) == ("notes.txt", "notes.txt", "Glaciers")
    assert body["size"] == len(b"Glaciers carve valleys.") and body["chunk_count"] == 0
    assert body["indexed_at"] is None and body["error"] == ""
    with document.file.open("rb") as handle:
        assert handle.read() == b"Glaciers carve valleys."
    assert Event.objects.filter(type="freshet.document.changed", subject=f"documents/{document.pk}").exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("scan.pdf", pdf_bytes(["Penguins huddle for warmth."])),
        ("memo.docx", docx_bytes(["A memo about tides."])),
        ("page.html", b"<!doctype html><html><body><p>Hello</p></body></html>"),
        ("readme.md", b"# Title\n\nSome *markdown*."),
        ("latin.txt", "Crème brûlée à Besançon.".encode("latin-1")),
    ],
)
def test_every_allowed_type_is_accepted(as_member, public_source, name, content):
    response = upload(as_member, public_source, content, name)
    assert response.status_code == 201, response.json()


def test_the_same_external_id_updates_the_document(as_member, public_source):
    first = upload(as_member, public_source, b"version one", "a.txt", external_id="kb/42").json()
    again = upload(as_member, public_source, b"version one", "b.txt", external_id="kb/42")
    assert again.status_code == 200 and again.json()["version"] == 1, "unchanged content changes nothing"

    changed = upload(as_member, public_source, b"version two", "c.txt", external_id="kb/42")

    assert changed.status_code == 200
    body = changed.json()
    assert body["id"] == first["id"] and body["version"] == 2 and body["filename"] == "c.txt"
    assert Document.objects.filter(source=public_source, external_id="kb/42").count() == 1


def test_without_external_id_the_file_name_identifies_the_document(as_member, public_source):
    first = upload(as_member, public_source, b"first draft", "plan.txt").json()
    second = upload(as_member, public_source, b"second draft", "plan.txt").json()
    other = upload(as_member, public_source, b"second draft", "other.txt").json()
    assert second["id"] == first["id"] and second["version"] == 2
    assert other["id"] != first["id"]
    # The same name in another source is another document.
    elsewhere = upload(as_member, SourceFactory(), b"first draft", "plan.txt").json()
    assert elsewhere["id"] != first["id"]


def test_the_client_filename_is_never_a_storage_path(as_member, public_source):
    response = upload(as_member, public_source, b"sneaky", "../../etc/passwd\x07.txt")
    assert response.status_code == 201, response.json()
    document = Document.objects.get(pk=response.json()["id"])

    assert document.filename == "passwd.txt" and document.external_id == "passwd.txt"
    stored = Path(document.file.path).resolve()
    assert stored.parent == (Path(settings.MEDIA_ROOT) / "documents").resolve()
    assert "passwd" not in stored.name and len(stored.name) == 32


def test_members_upload_into_their_groups_restricted_source(as_member, restricted_source):
    assert upload(as_member, restricted_source).status_code == 201


def test_outsiders_get_404_for_a_restricted_or_missing_source(as_outsider, restricted_source):
    for source_id in (restricted_source.pk, 10**9):
        response = upload(as_outsider, source_id)
        assert response.status_code == 404
        assert "may not see" in response.json()["detail"]
    assert not Document.objects.exists()


def test_uploads_go_only_into_upload_sources(as_staff):
    feed = SourceFactory(kind=Source.Kind.FEED)
    response = upload(as_staff, feed)
    assert response.status_code == 400
    assert "kind 'upload'" in response.json()["detail"] and "source" in response.json()["errors"]


def test_upload_is_401_for_anonymous_callers(anonymous, public_source):
    response = upload(anonymous, public_source)
    assert response.status_code == 401
    assert not Document.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"source": "abc"}, "source", "valid integer"),
        ({"source": ""}, "source", "valid integer"),
        ({"file": ""}, "file", "not a file"),
        ({"title": "t" * 501}, "title", "no more than 500"),
        ({"external_id": "x\u0000y"}, "external_id", "Null characters"),
    ],
)
def test_bad_upload_input_is_400_naming_the_field(as_member, public_source, fields, field, message):
    data = {"source": public_source.pk, "file": SimpleUploadedFile("a.txt", b"text"), **fields}
    response = as_member.post(DOCUMENTS, data, format="multipart")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"] and message in response.json()["detail"]


def test_a_missing_file_is_400(as_member, public_source):
    response = as_member.post(DOCUMENTS, {"source": public_source.pk}, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid input. file: No file was submitted."


def test_json_instead_of_multipart_is_415(as_member, public_source):
    response = as_member.post(DOCUMENTS, {"source": public_source.pk}, format="json")
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


# --- bulk ------------------------------------------------------------------------------------


def test_bulk_upload_stores_the_good_files_and_lists_the_rejected(as_member, public_source):
    files = [SimpleUploadedFile("a.txt", b"Alpha."), SimpleUploadedFile("b.pdf", pdf_bytes(["Beta."])),
             SimpleUploadedFile("c.png", PNG_BYTES), SimpleUploadedFile("d.txt", b""),
             SimpleUploadedFile("a.txt", b"Alpha again.")]

    response = as_member.post(BULK, {"source": public_source.pk, "files": files}, format="multipart")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert sorted(d["external_id"] for d in body["documents"]) == ["a.txt", "b.pdf"]
    rejected = {r["filename"]: r for r in body["rejected"]}
    assert rejected["c.png"]["status"] == 415 and "PNG image" in rejected["c.png"]["detail"]
    assert rejected["d.txt"]["status"] == 400 and "empty" in rejected["d.txt"]["detail"]
    assert rejected["a.txt"]["status"] == 400 and "sent twice" in rejected["a.txt"]["detail"]
    assert set(Document.objects.filter(source=public_source).values_list("external_id", flat=True)) == \
        {"a.txt", "b.pdf"}


def test_bulk_upload_with_nothing_acceptable_answers_the_shared_error(as_member, public_source):
    files = [SimpleUploadedFile("a.png", PNG_BYTES), SimpleUploadedFile("b.png", PNG_BYTES)]
    response = as_member.post(BULK, {"source": public_source.pk, "files": files}, format="multipart")
    assert response.status_code == 415
    assert "None of the 2 files" in response.json()["detail"] and len(response.json()["rejected"]) == 2
    assert not Document.objects.exists()


def test_bulk_upload_checks_its_input_and_access(as_member, as_outsider, anonymous, restricted_source, settings):
    settings.BULK_UPLOAD_MAX_FILES = 2
    too_many = [SimpleUploadedFile(f"{i}.txt", b"x") for i in range(3)]
    response = as_member.post(BULK, {"source": restricted_source.pk, "files": too_many}, format="multipart")
    assert response.status_code == 400 and "At most 2 files" in response.json()["detail"]

    response = as_member.post(BULK, {"source": restricted_source.pk}, format="multipart")
    assert response.status_code == 400 and "files" in response.json()["errors"]

    one = [SimpleUploadedFile("a.txt", b"x")]
    assert as_outsider.post(BULK, {"source": restricted_source.pk, "files": one},
                            format="multipart").status_code == 404
    assert anonymous.post(BULK, {"source": restricted_source.pk, "files": one},
                          format="multipart").status_code == 401
    assert not Document.objects.exists()


# --- list ------------------------------------------------------------------------------------


@pytest.fixture
def documents(public_source, restricted_source):
    a = document_ingest(source=public_source, external_id="a", content=b"alpha").document
    b = document_ingest(source=public_source, external_id="b", content=b"beta").document
    secret = document_ingest(source=restricted_source, external_id="s", content=b"secret").document
    Document.objects.filter(pk=b.pk).update(status=Document.Status.INDEXED)
    return {"a": a, "b": b, "secret": secret}


def test_it_lists_visible_documents_newest_first(as_member, as_outsider, documents):
    body = as_member.get(DOCUMENTS).json()
    assert body["count"] == 3
    assert [d["external_id"] for d in body["results"]] == ["s", "b", "a"]

    assert [d["external_id"] for d in as_outsider.get(DOCUMENTS).json()["results"]] == ["b", "a"]


def test_it_filters_documents_by_source_and_status(as_member, documents, public_source):
    by_source = as_member.get(DOCUMENTS, {"source": public_source.pk}).json()
    assert sorted(d["external_id"] for d in by_source["results"]) == ["a", "b"]
    indexed = as_member.get(DOCUMENTS, {"source": public_source.pk, "status": "indexed"}).json()
    assert [d["external_id"] for d in indexed["results"]] == ["b"]


def test_a_parameter_a_list_does_not_take_is_refused_by_name(as_member, documents):
    response = as_member.get(DOCUMENTS, {"stauts": "failed"})
    assert response.status_code == 400
    assert "stauts" in response.json()["detail"] and "status" in response.json()["detail"]
    assert as_member.get(f"{detail(documents['a'])}chunks/", {"": "false"}).status_code == 400


def test_it_paginates_documents(as_member, public_source, monkeypatch):
    # DRF reads PAGE_SIZE once, when the paginator class is defined.
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    for i in range(3):
        document_ingest(source=public_source, external_id=str(i), content=f"doc {i}".encode())
    first = as_member.get(DOCUMENTS).json()
    assert first["count"] == 3 and len(first["results"]) == 2 and first["next"]
    second = as_member.get(DOCUMENTS, {"page": 2}).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_filtering_by_a_source_one_may_not_see_is_404(as_outsider, documents, restricted_source):
    response = as_outsider.get(DOCUMENTS, {"source": restricted_source.pk})
    assert response.status_code == 404


@pytest.mark.parametrize("params", [{"status": "done"}, {"source": "x"}, {"source": 0}])
def test_bad_list_filters_are_400(as_member, params):
    response = as_member.get(DOCUMENTS, params)
    assert response.status_code == 400 and response.json()["errors"]


def test_listing_documents_is_401_for_anonymous_callers(anonymous, documents):
    assert anonymous.get(DOCUMENTS).status_code == 401


# --- retrieve, chunks ------------------------------------------------------------------------


def test_it_shows_a_document_with_its_status(as_member, documents):
    body = as_member.get(detail(documents["secret"])).json()
    assert body["id"] == documents["secret"].pk and body["status"] == "pending"
    assert {"error", "chunk_count", "indexed_at", "version", "media_type", "content_hash"} <= set(body)


def test_restricted_documents_are_404_to_outsiders(as_outsider, anonymous, documents):
    secret = documents["secret"]
    for path in (detail(secret), f"{detail(secret)}chunks/"):
        assert as_outsider.get(path).status_code == 404
        assert anonymous.get(path).status_code == 401
    assert as_outsider.get(detail(10**9)).status_code == 404


def test_it_lists_a_documents_chunks_in_order(as_member, documents):
    document = documents["a"]
    for ordinal in (1, 0):
        Chunk.objects.create(id=Chunk.make_id(document.pk, ordinal), document=document, ordinal=ordinal,
                             text=f"chunk {ordinal}", token_count=3, embedding_model="m", version=1)

    body = as_member.get(f"{detail(document)}chunks/").json()

    assert body["count"] == 2
    assert [(c["ordinal"], c["text"], c["id"]) for c in body["results"]] == [
        (0, "chunk 0", f"{document.pk}-0"), (1, "chunk 1", f"{document.pk}-1")]


def test_chunks_of_a_missing_document_are_404(as_member):
    assert as_member.get(f"{detail(10**9)}chunks/").status_code == 404


# --- delete ----------------------------------------------------------------------------------


def test_a_member_deletes_a_document_of_a_source_they_see_if_it_is_theirs(as_member, member, documents,
                                                                           restricted_source):
    # Issue 14: a member who is not staff deletes only what they uploaded (or what a source they
    # edit holds); the system-ingested document of a source they see stays.
    secret = documents["secret"]
    assert as_member.delete(detail(secret)).status_code == 403
    assert Document.objects.filter(pk=secret.pk).exists()

    own = document_ingest(source=restricted_source, external_id="mine", content=b"My note.", user=member).document
    response = as_member.delete(detail(own))
    assert response.status_code == 204
    assert not Document.objects.filter(pk=own.pk).exists()
    assert Event.objects.filter(type="freshet.document.deleted", subject=f"documents/{own.pk}").exists()


def test_deleting_is_404_for_outsiders_and_401_for_anonymous(as_outsider, anonymous, documents):
    secret = documents["secret"]
    assert as_outsider.delete(detail(secret)).status_code == 404
    assert anonymous.delete(detail(secret)).status_code == 401
    assert as_outsider.delete(detail(10**9)).status_code == 404
    assert Document.objects.filter(pk=secret.pk).exists()


# --- reindex ---------------------------------------------------------------------------------


def test_staff_reindex_a_document(as_staff, documents):
    document = documents["b"]
    response = as_staff.post(f"{detail(document)}reindex/")
    assert response.status_code == 202
    assert response.json()["status"] == "pending" and response.json()["version"] == 2
    document.refresh_from_db()
    assert document.version == 2 and document.indexed_fingerprint == ""


def test_only_staff_reindex(as_member, as_outsider, anonymous, documents):
    secret = documents["secret"]
    response = as_member.post(f"{detail(secret)}reindex/")
    assert response.status_code == 403 and response.json()["detail"] == "Only staff may reindex documents."
    assert as_outsider.post(f"{detail(secret)}reindex/").status_code == 404
    assert anonymous.post(f"{detail(secret)}reindex/").status_code == 401
    assert as_member.post(f"{detail(10**9)}reindex/").status_code == 404
    secret.refresh_from_db()
    assert secret.version == 1
