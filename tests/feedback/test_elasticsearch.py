"""The same vote -> score -> ranking path on the Elasticsearch engine (the noida-db emulator, or
the cluster at ELASTICSEARCH_URL). The worker process is bound to LanceDB for the session, so
here the pipeline and the feedback consumer run in this process, as Celery's eager tasks, through
the same subscriptions and handlers."""

from __future__ import annotations

import uuid

import pytest

from chat.retrieval import retrieve
from feedback.models import ChunkFeedback
from feedback.profiles import QuestionProfile
from feedback.services import feedback_record
from ingestion.models import Document
from ingestion.search_index import AccessFilter
from ingestion.search_index.elasticsearch_engine import ElasticsearchIndex
from tests.factories import UserFactory
from tests.feedback.conftest import ask, corpus_ingest, first_chunk, index_feedback


@pytest.mark.usefixtures("eager_tasks")
def test_votes_change_the_ranking_on_elasticsearch(transactional_db, elasticsearch_index, settings):
    assert isinstance(elasticsearch_index, ElasticsearchIndex)
    settings.SEARCH_FEEDBACK_WEIGHT = 1.0
    corpus = corpus_ingest(uuid.uuid4().hex[:6])
    for document in (corpus.first, corpus.second, corpus.other):
        document.refresh_from_db()
        assert document.status == Document.Status.INDEXED, document.error
    first, second = first_chunk(corpus.first), first_chunk(corpus.second)
    access = AccessFilter(everything=True, source_ids=(corpus.source_id,))

    def ranking() -> list[str]:
        return [hit.chunk_id for hit in retrieve(corpus.question, access=access, k=3)]

    assert ranking()[:2] == [first, second]
    assert index_feedback(first) == 0.0

    voters = [UserFactory(), UserFactory(), UserFactory()]  # a few people agreeing move a passage
    for user in voters:
        message = ask(user, corpus.question)
        feedback_record(user=user, message_id=message.pk, rating=-1, chunk_id=first)
        feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=second)

    down = 3 * settings.FEEDBACK_DOWN_WEIGHT  # three thumbs-down, each weighing FEEDBACK_DOWN_WEIGHT
    assert index_feedback(first) == pytest.approx(-down / (down + settings.FEEDBACK_PRIOR), abs=1e-3)
    assert index_feedback(second) == pytest.approx(3 / (3 + settings.FEEDBACK_PRIOR), abs=1e-3)
    after = ranking()
    assert after[0] == second and after.index(first) > 0
    assert ChunkFeedback.objects.get(chunk_id=first).down == 3

    # The question profiles went to the index too, and steer this question on their own.
    profile = QuestionProfile.decode(elasticsearch_index.get_chunks([second])[second].feedback_profile)
    assert (profile.up, profile.down) == (pytest.approx(3.0, abs=1e-3), 0.0)
    settings.SEARCH_FEEDBACK_WEIGHT = 0.0
    assert ranking()[0] == second
    settings.SEARCH_FEEDBACK_CONTEXT_WEIGHT = 0.0
    assert ranking()[:2] == [first, second]
