import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ingestion.models import Document
from tests.conftest import wait_for
from tests.factories import SourceFactory, UserFactory

pytestmark = pytest.mark.worker


def test_an_admin_uploads_a_document_from_the_browser_and_sees_it_indexed(worker, client):
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    source = SourceFactory(name="handbook")

    response = client.post("/admin/ingestion/document/add/", {
        "source": source.pk, "external_id": "", "title": "", "uri": "",
        "upload": SimpleUploadedFile("leave-policy.md", b"# Leave policy\n\nEveryone gets 30 days of leave."),
        "chunks-TOTAL_FORMS": "0", "chunks-INITIAL_FORMS": "0",
    })
    assert response.status_code == 302, response.content.decode()[:2000]

    document = Document.objects.get(source=source)
    assert (document.external_id, document.filename) == ("leave-policy.md", "leave-policy.md")
    assert document.uploaded_by == admin
    wait_for(lambda: Document.objects.get(pk=document.pk).status == Document.Status.INDEXED,
             message="the uploaded document to be indexed")

    page = client.get("/admin/ingestion/document/").content.decode()
    assert "Leave policy" in page and "Indexed" in page
