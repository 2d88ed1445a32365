"""GET /api/search/: authentication, input checks, access to sources, and the result shape, with
real tokens, the real database, a real worker and the real index."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from chat.retrieval import MODES
from ingestion.models import Document
from ingestion.services import document_ingest
from tests.conftest import client_for, wait_for
from tests.factories import GroupFactory, SourceFactory, UserFactory

URL = "/api/search/"


@pytest.mark.django_db
def test_it_requires_authentication():
    response = APIClient().get(URL, {"q": "anything"})
    assert response.status_code == 401
    assert "Token" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 1001}, "q"),
        ({"q": "ok", "k": "0"}, "k"),
        ({"q": "ok", "k": "ten"}, "k"),
        ({"q": "ok", "k": "101"}, "k"),
        ({"q": "ok", "mode": "fuzzy"}, "mode"),
        ({"q": "ok", "source": "abc"}, "source"),
    ],
)
def test_it_rejects_bad_input_with_a_readable_detail(params, field):
    response = client_for(UserFactory()).get(URL, params)
    assert response.status_code == 400
    body = response.json()
    assert field in body["errors"]
    assert body["detail"].startswith("Invalid input.") and field in body["detail"]


@pytest.mark.django_db
def test_limits_follow_settings():
    client = client_for(UserFactory())
    with override_settings(SEARCH_MAX_QUERY_CHARS=10, SEARCH_MAX_K=5):
        assert "limit is 10" in client.get(URL, {"q": "eleven chars"}).json()["detail"]
        assert "at most 5" in client.get(URL, {"q": "ok", "k": 6}).json()["detail"]


@pytest.mark.django_db
def test_a_source_the_caller_may_not_see_is_not_found():
    restricted = SourceFactory(public=False)
    restricted.groups.add(GroupFactory(name="legal"))
    client = client_for(UserFactory())
    for source_id in (restricted.pk, restricted.pk + 1000):
        response = client.get(URL, {"q": "contract", "source": source_id})
        assert response.status_code == 404
        assert f"No source {source_id}" in response.json()["detail"]


@pytest.mark.django_db
def test_a_source_is_searched_for_those_who_may_see_it():
    group = GroupFactory(name="legal")
    restricted = SourceFactory(public=False)
    restricted.groups.add(group)
    member, staff = UserFactory(), UserFactory(is_staff=True)
    member.groups.add(group)
    for user in (member, staff):
        response = client_for(user).get(URL, {"q": "contract", "source": restricted.pk, "mode": "bm25"})
        assert response.status_code == 200, (user, response.content)
    assert client_for(staff).get(URL, {"q": "contract", "source": restricted.pk + 1000}).status_code == 404


@pytest.mark.django_db
def test_it_is_throttled_per_user():
    client = client_for(UserFactory())
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": {
            **_rest_framework()["DEFAULT_THROTTLE_RATES"], "search": "2/min"}}):
        codes = [client.get(URL, {"q": "x", "mode": "bm25"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def _rest_framework() -> dict:
    from django.conf import settings

    return settings.REST_FRAMEWORK


def settled(document: Document) -> Document:
    def done():
        document.refresh_from_db()
        return document.status in (Document.Status.INDEXED, Document.Status.FAILED) and document
    wait_for(done, timeout=120, message=f"document {document.pk} to be indexed")
    assert document.status == Document.Status.INDEXED, document.error
    return document


@pytest.mark.worker
def test_results_have_the_documented_shape_and_a_safe_highlight(worker):
    source = SourceFactory(name="field-notes", public=True)
    text = ("Glaciers in the Alps retreat every summer. Nothing else here. "
            "Meltwater <b>floods</b> valleys when glaciers retreat & thin.")
    document = settled(document_ingest(source=source, external_id="alps", content=text.encode(),
                                       title="Alpine glaciers", uri="https://example.org/alps").document)
    response = client_for(UserFactory()).get(URL, {"q": "glaciers retreat", "k": 3, "source": source.pk})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "took_ms"} and body["took_ms"] >= 0
    assert len(body["results"]) == 1
    result = body["results"][0]
    assert set(result) == {"chunk_id", "document_id", "source_id", "source", "title", "text", "uri", "score",
                           "highlight", "relevance", "relevant"}
    assert result["relevant"] is True and 0 < result["relevance"] <= 1
    assert result == {
        **result,
        "chunk_id": f"{document.pk}-0", "document_id": document.pk, "source_id": source.pk,
        "source": "field-notes", "title": "Alpine glaciers", "uri": "https://example.org/alps", "text": text,
    }
    assert result["score"] > 0
    assert result["highlight"] == (
        "<mark>Glaciers</mark> in the Alps <mark>retreat</mark> every summer. … Meltwater &lt;b&gt;floods&lt;/b&gt; "
        "valleys when <mark>glaciers</mark> <mark>retreat</mark> &amp; thin.")


@pytest.mark.worker
def test_restricted_chunks_never_come_back_through_the_api(worker):
    team = GroupFactory(name="payroll")
    restricted = SourceFactory(name="salaries", public=False)
    restricted.groups.add(team)
    secret = "Salary band seven for the Brno office pays 91,400 korun, per the payroll memo of Ilse Vankova."
    document = settled(document_ingest(source=restricted, external_id="memo", content=secret.encode()).document)
    settled(document_ingest(source=SourceFactory(public=True), external_id="pub",
                            content=b"The Brno office opens at eight and has a canteen.").document)
    member = UserFactory()
    member.groups.add(team)
    outsider_client, member_client = client_for(UserFactory()), client_for(member)

    for mode in MODES:
        for query in (secret, "Brno salary band payroll memo"):
            response = outsider_client.get(URL, {"q": query, "k": 100, "mode": mode})
            assert response.status_code == 200
            assert restricted.pk not in {r["source_id"] for r in response.json()["results"]}, (mode, query)
        assert outsider_client.get(URL, {"q": secret, "mode": mode, "source": restricted.pk}).status_code == 404
        results = member_client.get(URL, {"q": secret, "mode": mode, "k": 3}).json()["results"]
        assert results[0]["document_id"] == document.pk, mode


def test_the_view_writes_results_as_the_output_serializer_does():
    import numpy as np

    from chat.apis.search import search_result_data
    from chat.retrieval import SearchResult
    from chat.serializers import SearchOutputSerializer

    result = SearchResult(chunk_id="7-0", document_id=7, source_id=2, source="Docs", title="T", text="A passage.",
                          uri="https://example.org/7", score=np.float32(0.5), highlight="A <mark>passage</mark>.",
                          relevance=np.float64(0.25), relevant=np.bool_(True))
    data = search_result_data(result)

    assert data == SearchOutputSerializer({"results": [result], "took_ms": 1.0}).data["results"][0]
    assert [type(v) for v in data.values()] == [str, int, int, str, str, str, str, float, str, float, bool]
