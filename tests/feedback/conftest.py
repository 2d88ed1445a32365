"""Feedback fixtures: a small corpus where two passages compete for the same question, personas,
answers made by the chat's own service, and helpers to read what the search index holds.

The Elasticsearch tests reuse the contract suite's emulator (noida-db on loopback, or the cluster
at ELASTICSEARCH_URL) and point `search_index()` at it for the length of a test.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from chat.models import Citation, Conversation, Message
from chat.selectors import Asker
from chat.services import answer_ask
from ingestion.models import Chunk, Document
from ingestion.search_index import search_index, search_index_reset
from ingestion.services import document_ingest
from tests.conftest import wait_for
from tests.contract.conftest import elasticsearch_url  # noqa: F401  (the emulator, as a fixture here too)
from tests.factories import GroupFactory, SourceFactory, UserFactory

# Two passages that answer the same question; the first matches its words a little better, so it
# ranks first until people say otherwise.
FIRST = ("Heat pumps{m} move heat from the outside air into the house. A heat pump{m} uses electricity "
         "to run its compressor, and heat pumps{m} warm a house in winter.")
SECOND = ("In winter a heat pump{m} can also heat water for the house. Installers size the pump for the "
          "coldest week of the year.")
OTHER = "Sourdough{m} bread rises slowly because wild yeast ferments the dough overnight."
SECRET = "The heat pump{m} tender for the new office is worth two million crowns; finance only."


def settled(document: Document, *, version: int | None = None, timeout: float = 120) -> Document:
    def done():
        document.refresh_from_db()
        if version is not None and document.version < version:
            return False
        return document.status in (Document.Status.INDEXED, Document.Status.FAILED) and document
    wait_for(done, timeout=timeout, message=f"document {document.pk} to be indexed")
    assert document.status == Document.Status.INDEXED, document.error
    return document


def index_feedback(chunk_id: str) -> float:
    """The feedback score the search index holds for a chunk."""
    return search_index().get_chunks([chunk_id])[chunk_id].feedback


def index_refreshed() -> bool:
    """True once every row written is in LanceDB's full-text index (the worker's coalesced
    refresh after writes does that; see SearchIndex.refresh)."""
    table = search_index()._open()
    fts = [index.name for index in table.list_indices() if index.index_type == "FTS"]
    return bool(fts) and table.index_stats(fts[0]).num_unindexed_rows == 0


def first_chunk(document: Document) -> str:
    return Chunk.objects.filter(document=document).order_by("ordinal").values_list("id", flat=True).first()


@dataclass
class Corpus:
    marker: str
    first: Document
    second: Document
    other: Document
    secret: Document
    source_id: int
    question: str


def corpus_ingest(marker: str) -> Corpus:
    """Ingest the fixture corpus (the caller runs the pipeline: a worker, or eager tasks)."""
    source = SourceFactory(name=f"energy-{marker}", public=True)
    finance = GroupFactory(name="finance")
    restricted = SourceFactory(name=f"tenders-{marker}", public=False)
    restricted.groups.add(finance)
    documents = {}
    for name, text in (("first", FIRST), ("second", SECOND), ("other", OTHER)):
        documents[name] = document_ingest(source=source, external_id=f"{name}.txt", filename=f"{name}.txt",
                                          title=f"{name.title()} note", uri=f"https://docs.example/{name}",
                                          content=text.format(m=marker).encode()).document
    secret = document_ingest(source=restricted, external_id="tender.txt", filename="tender.txt", title="Tender",
                             content=SECRET.format(m=marker).encode()).document
    return Corpus(marker=marker, first=documents["first"], second=documents["second"], other=documents["other"],
                  secret=secret, source_id=source.pk, question=f"How does a heat pump{marker} warm a house in winter?")


@pytest.fixture
def corpus(worker) -> Corpus:
    """The fixture corpus indexed by the real worker into LanceDB. Each test gets its own marker
    word (glued to the shared words), so other tests' chunks never compete."""
    corpus = corpus_ingest(uuid.uuid4().hex[:6])
    for name in ("first", "second", "other", "secret"):
        setattr(corpus, name, settled(getattr(corpus, name)))
    return corpus


@pytest.fixture
def eager_tasks():
    """Run Celery tasks in this process, at once (for the engine that the worker does not use)."""
    from config.celery_app import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def elasticsearch_index(elasticsearch_url, settings):  # noqa: F811
    """`search_index()` is an Elasticsearch index (a fresh alias) for this test."""
    settings.ELASTICSEARCH_URL = elasticsearch_url
    settings.ELASTICSEARCH_INDEX = f"freshet-feedback-test-{uuid.uuid4().hex[:8]}"
    search_index_reset()
    index = search_index()
    yield index
    index.drop()
    search_index_reset()


def ask(user, question: str) -> Message:
    """An answer made by the chat's own service, as the REST API makes it."""
    return answer_ask(asker=Asker(user=user), question=question)


def message_citing(user, chunks: list[tuple[str, int]], *, question: str = "A question?") -> Message:
    """A stored answer citing `chunks` ((chunk id, document id) pairs), without running retrieval:
    for tests that need many answers (storms of votes)."""
    conversation = Conversation.objects.create(user=user, title=question[:200])
    message = Message.objects.create(
        conversation=conversation, question=question, answer="An answer [1].",
        retrieved=[{"chunk_id": c, "document_id": d, "score": 1.0, "n": n} for n, (c, d) in enumerate(chunks, 1)],
    )
    Citation.objects.bulk_create([Citation(message=message, n=n, chunk_id=c, document_id=d, text="passage")
                                  for n, (c, d) in enumerate(chunks, 1)])
    return message


@pytest.fixture
def member(db):
    return UserFactory(username=f"member-{uuid.uuid4().hex[:6]}")
