"""The admin's feedback review (filters by source, rating, reason), the tallies per document, the
action that turns a thumbs-down with a comment into an evaluation case, and the command that
runs those cases."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.test import Client

from chat.evaluation import documents_ranked
from chat.retrieval import retrieve
from feedback.models import DocumentFeedback, EvaluationCase, Feedback
from feedback.services import feedback_record
from ingestion.search_index import AccessFilter
from ingestion.services import document_ingest
from tests.factories import SourceFactory, UserFactory
from tests.feedback.conftest import ask, first_chunk, message_citing


@pytest.fixture
def staff_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="reviewer", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def votes(db):
    """Votes about two sources: one down with a comment and a reason, one up, one on a whole answer."""
    handbook, wiki = SourceFactory(name="handbook"), SourceFactory(name="wiki")
    manual = document_ingest(source=handbook, external_id="manual", content=b"Manual.", title="Manual").document
    page = document_ingest(source=wiki, external_id="page", content=b"Page.", title="Page").document
    user = UserFactory()
    message = message_citing(user, [(f"{manual.pk}-0", manual.pk), (f"{page.pk}-0", page.pk)],
                             question="How do I reset the router?")
    down = feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=f"{manual.pk}-0",
                           reason="outdated", comment="The manual shows the old router.")
    up = feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=f"{page.pk}-0")
    other = UserFactory()
    answer = feedback_record(user=other, message_id=message_citing(other, [(f"{page.pk}-0", page.pk)]).pk, rating=-1)
    return {"handbook": handbook, "wiki": wiki, "manual": manual, "page": page, "down": down, "up": up,
            "answer": answer}


def listed(client: Client, query: str) -> set[int]:
    response = client.get(f"/admin/feedback/feedback/{query}")
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].result_list}


def test_the_review_list_filters_by_source_rating_and_reason(staff_client, votes):
    assert listed(staff_client, "") == {votes["down"].pk, votes["up"].pk, votes["answer"].pk}
    assert listed(staff_client, f"?source={votes['handbook'].pk}") == {votes["down"].pk}
    # An answer vote is about every source its answer cited.
    assert listed(staff_client, f"?source={votes['wiki'].pk}") == {votes["up"].pk, votes["answer"].pk}
    assert listed(staff_client, "?rating=-1") == {votes["down"].pk, votes["answer"].pk}
    assert listed(staff_client, "?reason=outdated") == {votes["down"].pk}


def test_the_tallies_per_document_are_listed(staff_client, votes):
    DocumentFeedback.objects.create(document_id=votes["manual"].pk, source_id=votes["handbook"].pk, title="Manual",
                                    down=3, outdated=2)
    response = staff_client.get(f"/admin/feedback/documentfeedback/?source={votes['handbook'].pk}")
    assert response.status_code == 200
    assert [row.document_id for row in response.context["cl"].result_list] == [votes["manual"].pk]
    assert f"/admin/ingestion/document/{votes['manual'].pk}/change/" in response.content.decode()


def test_a_thumbs_down_with_a_comment_becomes_an_evaluation_case(staff_client, votes):
    selected = [votes["down"].pk, votes["up"].pk]  # the up vote has no comment: it is left out
    asked = staff_client.post("/admin/feedback/feedback/", {"action": "make_evaluation_cases",
                                                            ACTION_CHECKBOX_NAME: selected})
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "How do I reset the router?" in page and "The manual shows the old router." in page
    assert f'name="document_{votes["down"].pk}"' in page and f'name="document_{votes["up"].pk}"' not in page

    made = staff_client.post("/admin/feedback/feedback/", {
        "action": "make_evaluation_cases", ACTION_CHECKBOX_NAME: selected, "apply": "1",
        f"document_{votes['down'].pk}": str(votes["page"].pk)}, follow=True)
    assert made.status_code == 200 and "Made 1 evaluation case" in made.content.decode()
    case = EvaluationCase.objects.get()
    assert (case.query, case.document, case.feedback, case.note) == (
        "How do I reset the router?", votes["page"], votes["down"], "The manual shows the old router.")
    assert Feedback.objects.count() == 3  # the votes stay


def test_evaluate_cases_needs_cases(db):
    with pytest.raises(CommandError, match="no evaluation cases yet"):
        call_command("evaluate_cases")
    with pytest.raises(CommandError, match="no evaluation cases yet"):
        call_command("evaluate", "--cases")
    with pytest.raises(CommandError, match="--dataset DIR"):
        call_command("evaluate")


@pytest.mark.worker
def test_evaluate_cases_runs_the_cases_through_retrieval(corpus):
    user = UserFactory()
    message = ask(user, corpus.question)
    vote = feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=first_chunk(corpus.first),
                           comment="The second note answers this.")
    cases = [EvaluationCase.objects.create(query=corpus.question, document=corpus.second, feedback=vote),
             EvaluationCase.objects.create(query=corpus.question, document=corpus.first)]
    out = StringIO()
    call_command("evaluate_cases", "--json", stdout=out)
    report = json.loads(out.getvalue())

    ranked = documents_ranked(h.document_id for h in retrieve(corpus.question, access=AccessFilter.staff(), k=30))
    expected = {str(case.pk): ranked.index(case.document_id) + 1 for case in cases}
    assert report["ranks"] == expected and set(expected.values()) <= set(range(1, 11))
    assert report["mrr@10"] == pytest.approx(sum(1 / rank for rank in expected.values()) / 2, abs=1e-4)
    assert report["cases"] == 2 and 0 < report["ndcg@10"] <= 1

    table = StringIO()
    call_command("evaluate_cases", stdout=table)
    assert "2 cases, mode hybrid: nDCG@10" in table.getvalue()
    through_evaluate = StringIO()  # the evaluation command runs them too
    call_command("evaluate", "--cases", "--json", stdout=through_evaluate)
    assert json.loads(through_evaluate.getvalue()) == report
