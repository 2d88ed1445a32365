"""GET/POST /api/sources/, GET/PATCH/DELETE /api/sources/{id}/."""

from __future__ import annotations

import pytest

from events.models import Event
from ingestion.models import Document, Source
from ingestion.services import document_ingest
from tests.conftest import client_for
from tests.factories import GroupFactory

pytestmark = pytest.mark.django_db


def url(source: Source | int | None = None) -> str:
    if source is None:
        return "/api/sources/"
    return f"/api/sources/{getattr(source, 'pk', source)}/"


# --- list and retrieve -----------------------------------------------------------------------


def test_it_lists_public_and_own_group_sources_with_counts(as_member, public_source, restricted_source):
    document_ingest(source=public_source, external_id="a", content=b"alpha")
    failed = document_ingest(source=public_source, external_id="b", content=b"beta").document
    Document.objects.filter(pk=failed.pk).update(status=Document.Status.FAILED)

    response = as_member.get(url())

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    by_name = {s["name"]: s for s in body["results"]}
    assert set(by_name) == {"handbook", "team-notes"}
    handbook = by_name["handbook"]
    assert handbook["document_counts"] == {"pending": 1, "processing": 0, "indexed": 0, "failed": 1}
    assert handbook["kind"] == "upload" and handbook["public"] is True
    assert by_name["team-notes"]["groups"] == ["team"]
    assert handbook["config"] is None, "connector config is for staff only"
    assert handbook["chunking"]["size"] > 0 and handbook["last_synced_at"] is None


def test_counts_are_not_multiplied_by_the_groups_join(as_member, member, restricted_source):
    # The member reaches the source through two groups: a join on groups would count twice.
    other = GroupFactory(name="other")
    restricted_source.groups.add(other)
    member.groups.add(other)
    for i in range(3):
        document_ingest(source=restricted_source, external_id=str(i), content=f"doc {i}".encode())

    source = as_member.get(url(restricted_source)).json()

    assert source["document_counts"]["pending"] == 3
    assert source["groups"] == ["other", "team"]


def test_it_hides_restricted_sources_from_outsiders(as_outsider, public_source, restricted_source):
    names = [s["name"] for s in as_outsider.get(url()).json()["results"]]
    assert names == ["handbook"]

    response = as_outsider.get(url(restricted_source))
    assert response.status_code == 404
    assert "may not see" in response.json()["detail"]
    # The same answer as for an id that does not exist: ids leak nothing.
    missing = as_outsider.get(url(10**9))
    assert missing.status_code == 404 and missing.json()["detail"].replace(str(10**9), "X") == \
        response.json()["detail"].replace(str(restricted_source.pk), "X")


def test_staff_see_every_source_and_its_config(as_staff, public_source, restricted_source):
    Source.objects.filter(pk=public_source.pk).update(config={"url": "https://example.org/"})
    body = as_staff.get(url()).json()
    assert {s["name"] for s in body["results"]} == {"handbook", "team-notes"}
    assert as_staff.get(url(public_source)).json()["config"] == {"url": "https://example.org/"}


def test_it_answers_401_with_a_hint_to_anonymous_callers(anonymous, public_source):
    for response in (anonymous.get(url()), anonymous.get(url(public_source)),
                     anonymous.post(url(), {"name": "x"}, format="json"),
                     anonymous.patch(url(public_source), {"public": False}, format="json"),
                     anonymous.delete(url(public_source))):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        assert "drf_create_token" in response.json()["detail"]
    assert Source.objects.filter(pk=public_source.pk, public=True).exists()


def test_a_bad_token_is_401(public_source):
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    response = client.get(url())
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


def test_session_authentication_works_for_the_browser(member, public_source):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(member)
    assert client.get(url()).status_code == 200


def test_a_page_past_the_end_is_404(as_member, public_source):
    response = as_member.get(url(), {"page": 99})
    assert response.status_code == 404
    assert response.json()["detail"]


def test_a_malformed_id_is_a_json_404(as_member):
    response = as_member.get("/api/sources/not-a-number/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "/api/docs/" in response.json()["detail"]


# --- create ----------------------------------------------------------------------------------


def test_staff_create_a_restricted_source(as_staff, team):
    response = as_staff.post(url(), {
        "name": "  research  ", "kind": "url", "config": {"url": "https://example.org/feed"},
        "public": False, "groups": ["team"], "chunk_size": 128, "chunk_overlap": 16, "schedule_minutes": 60,
    }, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    source = Source.objects.get(pk=body["id"])
    assert source.name == "research" and source.kind == "url" and source.public is False
    assert source.group_names() == ["team"]
    assert (source.chunk_size, source.chunk_overlap, source.schedule_minutes) == (128, 16, 60)
    assert body["groups"] == ["team"] and body["chunking"] == {"size": 128, "overlap": 16}
    assert body["document_counts"] == {"pending": 0, "processing": 0, "indexed": 0, "failed": 0}
    assert Event.objects.filter(type="freshet.source.changed", subject=f"sources/{source.pk}").exists()


def test_a_new_source_defaults_to_a_public_upload_source(as_staff):
    body = as_staff.post(url(), {"name": "inbox"}, format="json").json()
    assert (body["kind"], body["public"], body["groups"], body["config"]) == ("upload", True, [], {})
    assert body["chunk_size"] is None and body["schedule_minutes"] is None


def test_non_staff_may_not_create_sources(as_member):
    response = as_member.post(url(), {"name": "mine"}, format="json")
    assert response.status_code == 403
    assert response.json()["detail"] == "Only staff may create sources."
    assert not Source.objects.filter(name="mine").exists()


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "name", "required"),
        ({"name": "   "}, "name", "blank"),
        ({"name": "handbook"}, "name", "already exists"),
        ({"name": "n", "kind": "ftp"}, "kind", "not a valid choice"),
        ({"name": "n", "groups": ["nobody"]}, "groups", "Unknown groups: nobody"),
        ({"name": "n", "chunk_size": 4}, "chunk_size", "greater than or equal to 16"),
        ({"name": "n", "chunk_size": 64, "chunk_overlap": 64}, "chunk_overlap", "smaller than the chunk size"),
        ({"name": "n", "config": "url=x"}, "config", "dictionary"),
        ({"name": "n", "config": {"url": "a\u0000b"}}, "config", "NUL"),
        ({"name": "n\u0000"}, "name", "Null characters"),
        ({"name": "n", "schedule_minutes": 0}, "schedule_minutes", "greater than or equal to 1"),
    ],
)
def test_bad_source_input_is_400_naming_the_field(as_staff, public_source, payload, field, message):
    response = as_staff.post(url(), payload, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert field in body["errors"]
    assert message in body["detail"] and body["detail"].startswith("Invalid input.")


def test_malformed_json_is_400(as_staff):
    response = as_staff.post(url(), data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_form_encoded_source_writes_are_415(as_staff):
    response = as_staff.post(url(), {"name": "x"}, format="multipart")
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


# --- update ----------------------------------------------------------------------------------


def test_staff_change_a_source(as_staff, public_source, team):
    response = as_staff.patch(url(public_source), {"public": False, "groups": ["team"], "chunk_overlap": 8},
                              format="json")
    assert response.status_code == 200, response.json()
    public_source.refresh_from_db()
    assert public_source.public is False and public_source.group_names() == ["team"]
    assert public_source.chunk_overlap == 8 and public_source.name == "handbook"
    assert response.json()["groups"] == ["team"]


def test_renaming_to_its_own_name_is_fine_but_not_to_anothers(as_staff, public_source, restricted_source):
    assert as_staff.patch(url(public_source), {"name": "handbook"}, format="json").status_code == 200
    response = as_staff.patch(url(public_source), {"name": "team-notes"}, format="json")
    assert response.status_code == 400 and "already exists" in response.json()["detail"]


def test_patch_overlap_is_checked_against_the_stored_chunk_size(as_staff, public_source):
    Source.objects.filter(pk=public_source.pk).update(chunk_size=32)
    response = as_staff.patch(url(public_source), {"chunk_overlap": 40}, format="json")
    assert response.status_code == 400 and "chunk size (32)" in response.json()["detail"]


def test_non_staff_may_not_change_sources(as_member, public_source, restricted_source, as_outsider):
    response = as_member.patch(url(restricted_source), {"public": True}, format="json")
    assert response.status_code == 403 and response.json()["detail"] == "Only staff may change sources."
    # Someone who may not even see it gets 404, not 403.
    assert as_outsider.patch(url(restricted_source), {"public": True}, format="json").status_code == 404
    restricted_source.refresh_from_db()
    assert restricted_source.public is False


def test_patch_of_a_missing_source_is_404(as_staff):
    assert as_staff.patch(url(10**9), {"public": True}, format="json").status_code == 404


# --- delete ----------------------------------------------------------------------------------


def test_staff_delete_a_source_and_its_documents(as_staff, public_source):
    document_ingest(source=public_source, external_id="a", content=b"alpha")
    response = as_staff.delete(url(public_source))
    assert response.status_code == 204
    assert not Source.objects.filter(pk=public_source.pk).exists()
    assert not Document.objects.filter(source_id=public_source.pk).exists()
    assert Event.objects.filter(type="freshet.source.deleted", subject=f"sources/{public_source.pk}").exists()


def test_non_staff_may_not_delete_sources(as_member, as_outsider, public_source, restricted_source):
    assert as_member.delete(url(public_source)).status_code == 403
    assert as_outsider.delete(url(restricted_source)).status_code == 404
    assert as_member.delete(url(10**9)).status_code == 404
    assert Source.objects.filter(pk__in=[public_source.pk, restricted_source.pk]).count() == 2
