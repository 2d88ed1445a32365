"""A storm of votes on one chunk makes a bounded number of index writes (the real worker, LanceDB:
every write makes a new table version, so the versions count the writes)."""

from __future__ import annotations

import time

import lancedb
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from feedback.models import ChunkFeedback
from feedback.services import feedback_record
from tests.conftest import wait_for
from tests.feedback.conftest import first_chunk, index_feedback, message_citing

pytestmark = pytest.mark.worker
STORM = 1000
VERSIONS_PER_REFRESH = 2


def table_version() -> int:
    return lancedb.connect(str(settings.SEARCH_INDEX_DIR)).open_table("chunks").version


def test_a_thousand_votes_on_one_chunk_make_a_bounded_number_of_index_writes(corpus):
    chunk = first_chunk(corpus.first)
    users = User.objects.bulk_create([User(username=f"storm-{corpus.marker}-{i}") for i in range(STORM)])
    messages = [message_citing(user, [(chunk, corpus.first.pk)]) for user in users]
    before = table_version()

    started = time.monotonic()
    for user, message in zip(users, messages, strict=True):  # a thousand people, each clicking once
        feedback_record(user=user, message_id=message.pk, rating=1, chunk_id=chunk)
    expected = STORM / (STORM + settings.FEEDBACK_PRIOR)

    def written() -> bool:
        tally = ChunkFeedback.objects.filter(chunk_id=chunk).first()
        return bool(tally and tally.up == STORM and tally.indexed_score is not None
                    and abs(tally.indexed_score - expected) < 1e-6)

    wait_for(written, timeout=280, interval=0.5, message=f"{STORM} votes to be counted and written")
    elapsed = time.monotonic() - started
    assert index_feedback(chunk) == pytest.approx(expected, abs=1e-6)
    writes = table_version() - before
    # The guarantee: at most one write per flush window while the storm lasts (plus the last),
    # however many votes the window holds (here a vote's commit takes long enough that a window
    # holds a dozen or more), and at most one refresh of the full-text index per refresh
    # interval, which makes a version or two of its own (index update, compaction).
    print(f"{STORM} votes, {writes} table versions in {elapsed:.1f} s")
    flushes = elapsed / settings.FEEDBACK_FLUSH_SECONDS + 2
    refreshes = elapsed / settings.SEARCH_INDEX_REFRESH_SECONDS + 2
    assert 1 <= writes <= flushes + VERSIONS_PER_REFRESH * refreshes
    assert writes <= STORM // 4
