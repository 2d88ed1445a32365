"""The admin made for operators: every list page with hundreds of rows in a bounded number of
queries, the event log newest first and read-only, readable tallies, the admin upload through the
API's checks, and the actions' events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from chat.models import Citation, Conversation, Message
from events.models import Event
from feedback.models import ChunkFeedback, DocumentFeedback, EvaluationCase, Feedback
from ingestion.models import Chunk, Document
from tests.factories import SourceFactory, UserFactory

ROWS = 200
MAX_QUERIES = 15  # a list page, whatever its rows: session, user, counts, filters, the page


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="operator", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def many(db):
    """Hundreds of rows of everything the admin lists, made without the pipeline (bulk_create
    sends no signals, so no events and no work)."""
    sources = [SourceFactory(name=f"source-{i}") for i in range(3)]
    now = timezone.now()
    documents = Document.objects.bulk_create([
        Document(source=sources[i % 3], external_id=f"doc-{i}", title=f"Document {i}", status="failed" if i % 4 == 0
                 else "indexed", error="Parse error: not a PDF" if i % 4 == 0 else "", chunk_count=1)
        for i in range(ROWS)])
    Chunk.objects.bulk_create([Chunk(id=Chunk.make_id(d.pk, 0), document=d, ordinal=0, text=f"text {d.pk}",
                                     token_count=3, embedding_model="m", version=1) for d in documents])
    Event.objects.bulk_create([
        Event(id=f"e-{i}", source="/freshet", type="freshet.document.changed", subject=f"documents/{documents[i].pk}",
              time=now - timedelta(seconds=ROWS - i), data={"document_id": documents[i].pk, "version": 1})
        for i in range(ROWS)])
    user = UserFactory(username="asker")
    conversations = Conversation.objects.bulk_create([Conversation(user=user, title=f"c{i}") for i in range(ROWS)])
    messages = Message.objects.bulk_create([Message(conversation=c, question=f"q {c.pk}?", answer="a",
                                                    first_token_ms=123.456, total_ms=150.0) for c in conversations])
    Citation.objects.bulk_create([Citation(message=m, n=1, chunk_id=f"{documents[0].pk}-0",
                                           document_id=documents[0].pk, title="t", uri="", text="x")
                                  for m in messages[:50]])
    voters = [UserFactory(username=f"voter{i}") for i in range(3)]
    Feedback.objects.bulk_create([Feedback(user=voters[i % 3], message=messages[i], rating=-1 if i % 2 else 1,
                                           chunk_id=f"{documents[i].pk}-0", document_id=documents[i].pk)
                                  for i in range(ROWS)])
    ChunkFeedback.objects.bulk_create([ChunkFeedback(chunk_id=f"{d.pk}-0", document_id=d.pk, up=1, down=2,
                                                     score=-0.33333332303471375) for d in documents])
    DocumentFeedback.objects.bulk_create([DocumentFeedback(document_id=d.pk if i % 2 else 10**9 + i,
                                                           source_id=d.source_id, title=d.title, down=1)
                                          for i, d in enumerate(documents)])
    EvaluationCase.objects.bulk_create([EvaluationCase(query=f"q{i}", document=documents[i], created_by=user)
                                        for i in range(ROWS)])
    return {"documents": documents, "sources": sources}


LIST_PAGES = [
    "/admin/ingestion/document/", "/admin/ingestion/document/?status__exact=failed", "/admin/ingestion/chunk/",
    "/admin/events/event/", "/admin/events/event/?subject=documents", "/admin/chat/conversation/",
    "/admin/chat/message/", "/admin/feedback/feedback/", "/admin/feedback/chunkfeedback/",
    "/admin/feedback/documentfeedback/", "/admin/feedback/evaluationcase/",
]


def test_it_lists_hundreds_of_rows_in_a_bounded_number_of_queries(staff, many, django_assert_max_num_queries):
    # One test over every page (the rows are costly to make): a query per row would be 40-100 more.
    for url in LIST_PAGES:
        with django_assert_max_num_queries(MAX_QUERIES):
            response = staff.get(url)
        assert response.status_code == 200, url
        assert len(response.context["cl"].result_list) >= 40, url  # a full page was drawn, rows and all


def test_the_event_log_is_newest_first_read_only_and_links_to_what_it_is_about(staff, many):
    response = staff.get("/admin/events/event/")
    rows = list(response.context["cl"].result_list)
    assert [row.time for row in rows] == sorted((row.time for row in rows), reverse=True)
    assert [row.id for row in rows if row.id.startswith("e-")][:2] == [f"e-{ROWS - 1}", f"e-{ROWS - 2}"]
    page = response.content.decode()
    assert "Delete selected" not in page and 'name="action"' not in page
    newest = many["documents"][-1]
    assert f'href="/admin/ingestion/document/{newest.pk}/change/"' in page
    detail = staff.get(f"/admin/events/event/{rows[0].pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert staff.post(f"/admin/events/event/{rows[0].pk}/delete/", {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=rows[0].pk).exists()


def test_the_event_log_filters_by_type_subject_and_time(staff, many):
    document = many["documents"][5]
    Event.objects.create(id="other", source="/freshet", type="freshet.source.changed", subject="sources/1",
                         time=timezone.now() - timedelta(days=30), data={})

    def ids(query):
        response = staff.get(f"/admin/events/event/{query}")
        assert response.status_code == 200, query
        return {row.pk for row in response.context["cl"].result_list}

    assert ids(f"?subject=documents/{document.pk}") == {"e-5"}
    assert "other" in ids("?type=freshet.source.changed") and "e-5" not in ids("?type=freshet.source.changed")
    sources = ids("?subject=sources")
    assert "other" in sources and all(pk == "other" or not pk.startswith("e-") for pk in sources)
    assert "other" not in ids(f"?time__gte={(timezone.now() - timedelta(days=1)).date()}")
    # The document's own page links to its events and its chunks.
    page = staff.get(f"/admin/ingestion/document/{document.pk}/change/").content.decode()
    assert f"/admin/events/event/?subject=documents/{document.pk}" in page
    assert f"/admin/ingestion/chunk/?document__id__exact={document.pk}" in page
    assert f'href="/documents/{document.pk}/"' in page
    chunks = staff.get(f"/admin/ingestion/chunk/?document__id__exact={document.pk}")
    assert [c.pk for c in chunks.context["cl"].result_list] == [f"{document.pk}-0"]


def test_documents_show_status_error_chunks_and_a_link_to_their_page(staff, many):
    failed = many["documents"][0]
    page = staff.get("/admin/ingestion/document/?status__exact=failed").content.decode()
    assert "Parse error: not a PDF" in page and f'href="/documents/{failed.pk}/"' in page
    assert "text 1" not in page  # chunks are on the document's page, not in the list
    detail = staff.get(f"/admin/ingestion/document/{failed.pk}/change/").content.decode()
    assert f"text {failed.pk}" in detail


def test_tallies_read_well(staff, many):
    index = staff.get("/admin/").content.decode()
    assert "Chunk tallies" in index and "Document tallies" in index and "tallys" not in index
    assert "Freshet" in index
    chunks = staff.get("/admin/feedback/chunkfeedback/").content.decode()
    assert "-0.33" in chunks and "0.3333" not in chunks
    documents = staff.get("/admin/feedback/documentfeedback/").content.decode()
    assert "(deleted)" in documents  # half the tallies are of documents that are gone


def test_the_reprocess_action_publishes_a_change_per_document(staff, many):
    chosen = many["documents"][:3]
    before = {d.pk: d.version for d in chosen}
    response = staff.post("/admin/ingestion/document/", {"action": "reindex",
                                                         ACTION_CHECKBOX_NAME: [d.pk for d in chosen]}, follow=True)
    assert response.status_code == 200 and "3 documents queued for reprocessing" in response.content.decode()
    for document in chosen:
        published = Event.objects.filter(type="freshet.document.changed", subject=f"documents/{document.pk}",
                                         data__version=before[document.pk] + 1)
        assert published.count() == 1
    assert Event.objects.filter(type="freshet.document.changed", data__version=2).count() == 3


@pytest.fixture
def upload_source(db):
    return SourceFactory(name="handbook")


def upload(client: Client, source, name: str, content: bytes):
    return client.post("/admin/ingestion/document/add/", {
        "source": source.pk, "external_id": "", "title": "", "uri": "",
        "upload": SimpleUploadedFile(name, content), "chunks-TOTAL_FORMS": "0", "chunks-INITIAL_FORMS": "0",
    })


@pytest.mark.parametrize(("name", "content", "says"), [
    ("report.pdf", b"\x00\x01\x02junk bytes that are not a PDF\xff\xfe" * 20, "report.pdf"),
    ("empty.txt", b"", "empty"),
    ("big.txt", b"a" * 2048, "larger than the upload limit"),
])
def test_a_refused_upload_shows_a_form_error_and_creates_nothing(staff, upload_source, settings, name, content,
                                                                  says):
    settings.MAX_UPLOAD_BYTES = 1024
    response = upload(staff, upload_source, name, content)
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    assert "upload" in errors and says in " ".join(errors["upload"]), errors
    assert says in response.content.decode()
    assert not Document.objects.exists()
    assert not Event.objects.filter(type__startswith="freshet.document.").exists()


def test_an_accepted_upload_stores_the_checked_content(staff, upload_source):
    response = upload(staff, upload_source, "notes.md", b"# Notes\n\nThe fjord is deep.")
    assert response.status_code == 302
    document = Document.objects.get()
    assert (document.filename, document.external_id, document.uploaded_by.username) == ("notes.md", "notes.md",
                                                                                      "operator")
    assert Event.objects.filter(type="freshet.document.changed", subject=f"documents/{document.pk}").exists()
