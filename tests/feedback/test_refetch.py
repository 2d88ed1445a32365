"""`outdated` votes re-fetch the document from its source: a small web server on 127.0.0.1 plays
the source. Unchanged content makes no new version; changed content is indexed again and the
answers that cited the old text are marked stale."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat.models import Message
from chat.retrieval import retrieve
from events.errors import TransientError
from feedback.models import ChunkFeedback, DocumentFeedback
from feedback.refetch import RefetchFailed, url_fetch
from feedback.services import feedback_record
from ingestion.models import Chunk, Source
from ingestion.search_index import AccessFilter
from ingestion.services import document_ingest
from tests.conftest import wait_for
from tests.factories import SourceFactory, UserFactory
from tests.feedback.conftest import ask, index_feedback, settled

PAGE = ("<html><head><title>Tariffs</title></head>"
        "<body><p>The night tariff{m} costs {price} cents per kWh.</p></body></html>")


class Site:
    """Pages served from memory; `hits` counts requests per path."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, bytes]] = {}
        self.hits: dict[str, int] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the name http.server calls)
                site.hits[self.path] = site.hits.get(self.path, 0) + 1
                status, body = site.pages.get(self.path, (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def site():
    served = Site()
    yield served
    served.server.shutdown()
    served.server.server_close()


def web_document(site: Site, path: str, marker: str, price: int):
    site.pages[path] = (200, PAGE.format(m=marker, price=price).encode())
    source = SourceFactory(kind=Source.Kind.URL, public=True)
    url = site.url(path)
    document = document_ingest(source=source, external_id=url, filename="page.html", uri=url,
                               content=site.pages[path][1]).document
    return settled(document)


def vote_outdated(document, question: str):
    user = UserFactory()
    message = ask(user, question)
    chunk_id = f"{document.pk}-0"
    assert chunk_id in {entry["chunk_id"] for entry in message.retrieved}
    feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=chunk_id, reason="outdated")
    return message, chunk_id


def refetch_status(document) -> str:
    row = DocumentFeedback.objects.filter(document_id=document.pk).first()
    return row.refetch_status if row and row.refetch_status != DocumentFeedback.Refetch.REQUESTED else ""


@pytest.mark.worker
def test_outdated_with_unchanged_content_fetches_and_makes_no_new_version(worker, site):
    document = web_document(site, "/tariffs", "zq1", 12)
    vote_outdated(document, "What does the night tariffzq1 cost?")
    wait_for(lambda: refetch_status(document), timeout=60, message="the re-fetch")
    assert refetch_status(document) == DocumentFeedback.Refetch.UNCHANGED
    assert site.hits["/tariffs"] == 1
    document.refresh_from_db()
    assert document.version == 1


@pytest.mark.worker
def test_outdated_with_changed_content_reindexes_and_marks_answers_stale(worker, site):
    document = web_document(site, "/prices", "zq2", 12)
    site.pages["/prices"] = (200, PAGE.format(m="zq2", price=19).encode())  # the source moved on
    message, chunk_id = vote_outdated(document, "What does the night tariffzq2 cost?")

    wait_for(lambda: refetch_status(document), timeout=60, message="the re-fetch")
    assert refetch_status(document) == DocumentFeedback.Refetch.CHANGED
    document = settled(document, version=2)
    assert "19 cents" in Chunk.objects.get(pk=chunk_id).text
    hits = retrieve("night tariffzq2 cents", access=AccessFilter.staff(), k=3, mode="bm25")
    assert hits and hits[0].chunk_id == chunk_id and "19 cents" in hits[0].text
    wait_for(lambda: Message.objects.get(pk=message.pk).stale, timeout=60,
             message="the answer citing the old text to be marked stale")
    # The outdated vote was about the old text: once the new one is in, it no longer counts. The
    # vote's own flush may land before or after the new version; either way the tally ends
    # recounted after the refresh, at zero, and written to the index.
    refreshed_at = DocumentFeedback.objects.get(document_id=document.pk).content_refreshed_at
    assert refreshed_at is not None

    def recounted() -> bool:
        tally = ChunkFeedback.objects.filter(chunk_id=chunk_id, indexed_at__gte=refreshed_at).first()
        return tally is not None and tally.indexed_score == 0.0 and index_feedback(chunk_id) == 0.0

    wait_for(recounted, timeout=60, message="the outdated vote to stop counting")
    assert ChunkFeedback.objects.get(chunk_id=chunk_id).down == 0
    assert DocumentFeedback.objects.get(document_id=document.pk).outdated == 1
    assert site.hits["/prices"] == 1


def test_fetching_refuses_what_is_not_a_web_page_or_too_big(site):
    site.pages["/big"] = (200, b"x" * 5000)
    site.pages["/busy"] = (503, b"busy")
    with pytest.raises(RefetchFailed, match="only http and https|Only http and https"):
        url_fetch("file:///etc/passwd")
    with pytest.raises(RefetchFailed, match="the limit is 1000"):
        url_fetch(site.url("/big"), max_bytes=1000)
    assert url_fetch(site.url("/big"), max_bytes=5000) == b"x" * 5000
    with pytest.raises(RefetchFailed, match="answered 404"):
        url_fetch(site.url("/missing"))
    with pytest.raises(TransientError, match="answered 503"):
        url_fetch(site.url("/busy"))
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    with pytest.raises(TransientError):
        url_fetch(f"http://127.0.0.1:{port}/", timeout=2)
