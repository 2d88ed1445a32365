"""Who may replace or delete a document (issue 14): staff any; others only a document they
uploaded, or any document of a source whose editor groups include one of theirs; 403 otherwise,
404 where they may not see the document at all. One rule (selectors.document_may_change) for the
REST API, the admin and the services every intake calls."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.files.uploadedfile import SimpleUploadedFile

from events.models import Event
from ingestion.models import Document
from ingestion.selectors import document_may_change
from ingestion.services import DocumentChangeForbidden, DocumentSourceNotVisible, document_delete, document_ingest
from tests.conftest import client_for
from tests.factories import GroupFactory, UserFactory

pytestmark = pytest.mark.django_db

DOCUMENTS = "/api/documents/"
BULK = "/api/documents/bulk/"


def upload(client, source, content: bytes = b"Glaciers carve valleys.", name: str = "notes.txt", **fields):
    return client.post(DOCUMENTS, {"source": source.pk, "file": SimpleUploadedFile(name, content), **fields},
                       format="multipart")


def detail(document) -> str:
    return f"/api/documents/{document.pk}/"


@pytest.fixture
def members_document(member, public_source):
    """A document the member uploaded to the public source (which the outsider may see too)."""
    return document_ingest(source=public_source, external_id="notes.txt", content=b"Glaciers carve valleys.",
                           filename="notes.txt", user=member).document


@pytest.fixture
def editor(public_source):
    """A member of the public source's editor group (and of no group that grants sight)."""
    editors = GroupFactory(name="handbook-editors")
    public_source.editor_groups.add(editors)
    user = UserFactory(username="editor")
    user.groups.add(editors)
    return user


# --- uploaded_by --------------------------------------------------------------------------------


def test_it_records_who_uploaded_a_document(as_member, member, public_source):
    response = upload(as_member, public_source)

    assert response.status_code == 201, response.json()
    assert response.json()["uploaded_by"] == "member"
    assert Document.objects.get(pk=response.json()["id"]).uploaded_by == member
    listed = as_member.get(DOCUMENTS).json()["results"]
    assert [d["uploaded_by"] for d in listed] == ["member"]


def test_documents_ingested_by_the_system_have_no_uploader(as_member, public_source):
    document = document_ingest(source=public_source, external_id="feed-1", content=b"From a connector.").document

    assert document.uploaded_by is None
    assert as_member.get(detail(document)).json()["uploaded_by"] is None


def test_replacing_keeps_the_original_uploader(as_staff, member, members_document, public_source):
    response = upload(as_staff, public_source, b"Staff's correction.")

    assert response.status_code == 200 and response.json()["version"] == 2
    assert response.json()["uploaded_by"] == "member"


def test_deleting_the_uploader_keeps_their_documents(member, members_document):
    member.delete()
    members_document.refresh_from_db()
    assert members_document.uploaded_by is None


# --- delete -------------------------------------------------------------------------------------


def test_deleting_somebody_elses_document_is_403(as_outsider, members_document):
    response = as_outsider.delete(detail(members_document))

    assert response.status_code == 403
    assert "uploaded by someone else" in response.json()["detail"]
    assert "editors" in response.json()["detail"]
    assert Document.objects.filter(pk=members_document.pk).exists()
    assert not Event.objects.filter(type="freshet.document.deleted").exists()


def test_uploaders_delete_their_own_documents(as_member, members_document):
    assert as_member.delete(detail(members_document)).status_code == 204
    assert not Document.objects.filter(pk=members_document.pk).exists()


def test_editors_of_the_source_delete_any_of_its_documents(editor, members_document):
    assert client_for(editor).delete(detail(members_document)).status_code == 204
    assert not Document.objects.filter(pk=members_document.pk).exists()


def test_staff_delete_any_document(as_staff, members_document):
    assert as_staff.delete(detail(members_document)).status_code == 204


def test_a_document_ingested_by_the_system_is_for_staff_and_editors_to_delete(as_member, editor, public_source):
    document = document_ingest(source=public_source, external_id="feed-1", content=b"From a connector.").document
    assert as_member.delete(detail(document)).status_code == 403
    assert client_for(editor).delete(detail(document)).status_code == 204


def test_a_document_one_may_not_see_is_404_not_403(as_outsider, member, restricted_source):
    secret = document_ingest(source=restricted_source, external_id="s", content=b"secret", user=member).document

    response = as_outsider.delete(detail(secret))

    assert response.status_code == 404
    assert Document.objects.filter(pk=secret.pk).exists()


def test_editor_groups_of_another_source_grant_nothing(as_outsider, outsider, members_document, restricted_source):
    others = GroupFactory(name="notes-editors")
    restricted_source.editor_groups.add(others)
    outsider.groups.add(others)
    assert as_outsider.delete(detail(members_document)).status_code == 403


def test_leaving_the_editor_group_counts_from_the_next_request(editor, members_document, public_source):
    client = client_for(editor)
    editor.groups.clear()
    assert client.delete(detail(members_document)).status_code == 403


# --- replace by uploading the same name ---------------------------------------------------------


def test_replacing_somebody_elses_document_by_its_name_is_403(as_outsider, members_document, public_source):
    response = upload(as_outsider, public_source, b"Vandalised.")

    assert response.status_code == 403
    body = response.json()
    assert "'notes.txt'" in body["detail"] and "uploaded by someone else" in body["detail"]
    members_document.refresh_from_db()
    assert members_document.version == 1
    with members_document.file.open("rb") as handle:
        assert handle.read() == b"Glaciers carve valleys."


def test_replacing_by_external_id_or_with_the_same_content_is_403_too(as_outsider, members_document, public_source):
    assert upload(as_outsider, public_source, b"Other.", "other.txt", external_id="notes.txt").status_code == 403
    assert upload(as_outsider, public_source, b"Glaciers carve valleys.").status_code == 403
    members_document.refresh_from_db()
    assert members_document.version == 1 and members_document.filename == "notes.txt"


def test_uploaders_replace_their_own_documents(as_member, members_document, public_source):
    response = upload(as_member, public_source, b"Glaciers carve fjords.")
    assert response.status_code == 200 and response.json()["version"] == 2


def test_editors_and_staff_replace_any_document_of_the_source(editor, as_staff, members_document, public_source):
    response = upload(client_for(editor), public_source, b"Edited.")
    assert response.status_code == 200 and response.json()["version"] == 2
    response = upload(as_staff, public_source, b"Edited by staff.")
    assert response.status_code == 200 and response.json()["version"] == 3


def test_anyone_who_sees_the_source_still_adds_new_documents(as_outsider, outsider, members_document, public_source):
    response = upload(as_outsider, public_source, b"My own notes.", "mine.txt")
    assert response.status_code == 201 and response.json()["uploaded_by"] == "outsider"


def test_bulk_upload_rejects_only_the_files_that_would_replace_somebody_elses(
    as_outsider, members_document, public_source,
):
    files = [SimpleUploadedFile("notes.txt", b"Vandalised."), SimpleUploadedFile("mine.txt", b"Mine.")]

    response = as_outsider.post(BULK, {"source": public_source.pk, "files": files}, format="multipart")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert [(d["external_id"], d["uploaded_by"]) for d in body["documents"]] == [("mine.txt", "outsider")]
    assert [(r["filename"], r["status"]) for r in body["rejected"]] == [("notes.txt", 403)]
    assert "uploaded by someone else" in body["rejected"][0]["detail"]
    members_document.refresh_from_db()
    assert members_document.version == 1


def test_bulk_upload_with_every_file_forbidden_is_403(as_outsider, members_document, public_source):
    files = [SimpleUploadedFile("notes.txt", b"Vandalised.")]
    response = as_outsider.post(BULK, {"source": public_source.pk, "files": files}, format="multipart")
    assert response.status_code == 403 and response.json()["rejected"][0]["status"] == 403


# --- the rule and the services, for every other path ---------------------------------------------


def test_the_rule(member, outsider, staff, editor, members_document):
    assert document_may_change(user=member, document=members_document)
    assert document_may_change(user=editor, document=members_document)
    assert document_may_change(user=staff, document=members_document)
    assert not document_may_change(user=outsider, document=members_document)
    assert not document_may_change(user=AnonymousUser(), document=members_document)
    assert not document_may_change(user=None, document=members_document)


def test_the_uploader_who_loses_sight_of_the_source_may_no_longer_change_it(member, team, restricted_source):
    document = document_ingest(source=restricted_source, external_id="s", content=b"secret", user=member).document
    member.groups.remove(team)
    assert not document_may_change(user=member, document=document)


def test_services_refuse_for_the_user_and_act_for_the_system(outsider, members_document, public_source):
    with pytest.raises(DocumentChangeForbidden) as refused:
        document_ingest(source=public_source, external_id="notes.txt", content=b"x", user=outsider)
    assert refused.value.status == 403
    with pytest.raises(DocumentChangeForbidden):
        document_delete(document=members_document, user=outsider)

    # Connectors, the feedback re-fetch and evaluation call without a user: the system may.
    result = document_ingest(source=public_source, external_id="notes.txt", content=b"Re-fetched.")
    assert result.changed and result.document.uploaded_by_id == members_document.uploaded_by_id
    document_delete(document=members_document)
    assert not Document.objects.filter(pk=members_document.pk).exists()


def test_ingesting_into_a_source_the_user_may_not_see_is_refused(outsider, restricted_source):
    with pytest.raises(DocumentSourceNotVisible) as refused:
        document_ingest(source=restricted_source, external_id="x", content=b"x", user=outsider)
    assert refused.value.status == 404
    assert not Document.objects.exists()


# --- sources' editor groups -----------------------------------------------------------------------


def test_staff_set_a_sources_editor_groups(as_staff, team):
    GroupFactory(name="editors")
    response = as_staff.post("/api/sources/", {"name": "wiki", "editor_groups": ["editors"]}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["editor_groups"] == ["editors"]

    source_id = response.json()["id"]
    response = as_staff.patch(f"/api/sources/{source_id}/", {"editor_groups": ["team", "editors"]}, format="json")
    assert response.status_code == 200 and response.json()["editor_groups"] == ["editors", "team"]
    assert as_staff.patch(f"/api/sources/{source_id}/", {"editor_groups": ["nobody"]},
                          format="json").json()["errors"]["editor_groups"] == ["Unknown groups: nobody. Create them "
                                                                               "first (in the admin)."]


def test_members_see_a_sources_editor_groups_but_may_not_change_them(as_member, editor, public_source):
    assert as_member.get(f"/api/sources/{public_source.pk}/").json()["editor_groups"] == ["handbook-editors"]
    response = as_member.patch(f"/api/sources/{public_source.pk}/", {"editor_groups": []}, format="json")
    assert response.status_code == 403
    assert public_source.editor_group_names() == ["handbook-editors"]


def test_the_schema_documents_the_403_of_replacing_and_deleting(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, method in [("/api/documents/", "post"), ("/api/documents/bulk/", "post"),
                         ("/api/documents/{document_id}/", "delete")]:
        assert "editor_groups" in schema["paths"][path][method]["responses"]["403"]["description"], (path, method)
    document = schema["components"]["schemas"]["DocumentOutput"]["properties"]["uploaded_by"]
    assert document["type"] == "string" and document["nullable"] is True


# --- the admin ----------------------------------------------------------------------------------


def test_an_admin_upload_records_the_admin_and_the_source_form_offers_editor_groups(client, public_source):
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin)

    response = client.post("/admin/ingestion/document/add/", {
        "source": public_source.pk, "external_id": "", "title": "", "uri": "",
        "upload": SimpleUploadedFile("leave-policy.md", b"# Leave policy\n\nEveryone gets 30 days."),
        "chunks-TOTAL_FORMS": "0", "chunks-INITIAL_FORMS": "0",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Document.objects.get(source=public_source).uploaded_by == admin
    form = client.get(f"/admin/ingestion/source/{public_source.pk}/change/").content.decode()
    assert 'name="editor_groups"' in form
