"""Through the API and the real pipeline: a real Celery worker process, PostgreSQL, Redis and
the search index. Data is committed (the `worker` fixture) so the worker sees it."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from chat.retrieval import retrieve
from ingestion.search_index import AccessFilter, search_index
from tests.conftest import client_for, wait_for
from tests.factories import SourceFactory, UserFactory

pytestmark = pytest.mark.worker

TEXT = (b"Fjords are long, narrow inlets with steep sides, created by glacial erosion. "
        b"Norway's coastline has more than a thousand of them.")


def settled(client, document_id: int, *, version: int = 1) -> dict:
    def done():
        body = client.get(f"/api/documents/{document_id}/").json()
        return body["version"] == version and body["status"] in ("indexed", "failed") and body
    return wait_for(done, timeout=120, message=f"document {document_id} v{version} to be indexed or failed")


def test_an_uploaded_file_is_indexed_searchable_reindexed_and_deleted(worker):
    source = SourceFactory(name="geography")
    staff = client_for(UserFactory(username="e2e-staff", is_staff=True))

    response = staff.post("/api/documents/", {"source": source.pk, "file": SimpleUploadedFile("fjords.txt", TEXT)},
                          format="multipart")
    assert response.status_code == 201, response.json()
    document_id = response.json()["id"]

    document = settled(staff, document_id)
    assert document["status"] == "indexed", document["error"]
    assert document["chunk_count"] >= 1 and document["indexed_at"] and document["media_type"] == "text/plain"
    chunks = staff.get(f"/api/documents/{document_id}/chunks/").json()
    assert chunks["count"] == document["chunk_count"] and "Fjords" in chunks["results"][0]["text"]
    assert document_id in [hit.document_id for hit in retrieve("glacial fjords", access=AccessFilter(), k=3)]
    counts = staff.get(f"/api/sources/{source.pk}/").json()["document_counts"]
    assert counts["indexed"] == 1

    assert staff.post(f"/api/documents/{document_id}/reindex/").status_code == 202
    assert settled(staff, document_id, version=2)["status"] == "indexed"

    assert staff.delete(f"/api/documents/{document_id}/").status_code == 204
    wait_for(lambda: not search_index().chunk_versions(document_id=document_id),
             message="the deleted document's chunks to leave the index")
    assert staff.get(f"/api/documents/{document_id}/").status_code == 404


def test_an_unparseable_upload_fails_with_its_reason_visible_in_the_api(worker):
    # A PDF header that passes the type check but is not a readable PDF: it fails in parsing.
    source = SourceFactory(name="broken")
    client = client_for(UserFactory(username="e2e-member"))
    response = client.post("/api/documents/", {"source": source.pk, "file": SimpleUploadedFile(
        "broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog")}, format="multipart")
    assert response.status_code == 201

    document = settled(client, response.json()["id"])

    assert document["status"] == "failed" and "PDF is corrupt" in document["error"]
    assert client.get(f"/api/sources/{source.pk}/").json()["document_counts"]["failed"] == 1
