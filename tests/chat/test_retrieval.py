"""Retrieval: the fusion on hand-made lists, highlighting, and end to end through a real worker and
the real index (fusion where BM25 and kNN disagree; access in every mode)."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import override_settings

from chat.retrieval import MODES, Fusion, apply_feedback, default_fusion, fuse, highlight, retrieve
from chat.retrieval.ranking import feedback_moves
from feedback.profiles import QuestionProfile
from ingestion.models import Document
from ingestion.search_index import AccessFilter, SearchHit, search_index
from ingestion.selectors import access_for_user
from ingestion.services import document_ingest
from tests.conftest import wait_for
from tests.factories import GroupFactory, SourceFactory, UserFactory


def hit(chunk_id: str, score: float) -> SearchHit:
    return SearchHit(chunk_id=chunk_id, document_id=int(chunk_id[1:]), source_id=1, ordinal=0, title="",
                     text="", uri="", score=score)


# BM25 and kNN disagree: BM25 ranks a, b, c; kNN ranks c, a, d.
def lists() -> dict[str, list[SearchHit]]:
    return {"bm25": [hit("a1", 12.0), hit("b2", 6.0), hit("c3", 2.0)],
            "knn": [hit("c3", 0.90), hit("a1", 0.80), hit("d4", 0.50)]}


def test_rrf_sums_reciprocal_ranks():
    fused = fuse(lists(), fusion=Fusion(method="rrf", rrf_k=60, bm25_weight=1.0, knn_weight=1.0))
    # a: 1/61 + 1/62 = 0.032522; c: 1/63 + 1/61 = 0.032266; b: 1/62 = 0.016129; d: 1/63 = 0.015873
    assert [h.chunk_id for h in fused] == ["a1", "c3", "b2", "d4"]
    assert [h.score for h in fused] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63])
    assert fused[0].ranks == {"bm25": 1, "knn": 2}
    assert fused[2].ranks == {"bm25": 2} and fused[3].ranks == {"knn": 3}


def test_rrf_weights_can_let_knn_win():
    fused = fuse(lists(), fusion=Fusion(method="rrf", rrf_k=60, bm25_weight=1.0, knn_weight=3.0))
    # a: 1/61 + 3/62 = 0.064781; c: 1/63 + 3/61 = 0.065053; d: 3/63 = 0.047619; b: 1/62 = 0.016129
    assert [h.chunk_id for h in fused] == ["c3", "a1", "d4", "b2"]


def test_convex_fusion_combines_min_max_normalised_scores():
    fused = fuse(lists(), fusion=Fusion(method="convex", bm25_weight=0.5, knn_weight=0.5))
    # bm25 normalised: a 1, b 0.4, c 0; knn normalised: c 1, a 0.75, d 0 (absent = 0).
    # a: 0.5*1 + 0.5*0.75 = 0.875; c: 0 + 0.5 = 0.5; b: 0.2; d: 0
    assert [h.chunk_id for h in fused] == ["a1", "c3", "b2", "d4"]
    assert [h.score for h in fused] == pytest.approx([0.875, 0.5, 0.2, 0.0])
    # Leaning on kNN: a: 0.2 + 0.8*0.75 = 0.8; c: 0.8 (tie, broken by id); b: 0.08
    leaning = fuse(lists(), fusion=Fusion(method="convex", bm25_weight=0.2, knn_weight=0.8))
    assert [h.chunk_id for h in leaning][:3] == ["a1", "c3", "b2"]
    assert leaning[1].score == pytest.approx(0.8)


def test_fusion_does_not_touch_the_engine_hits():
    original = lists()
    fuse(original, fusion=Fusion())
    assert original["bm25"][0].score == 12.0 and original["bm25"][0].ranks == {}


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_fusion_cut_at_a_limit_is_the_head_of_the_whole_list(method):
    """`limit` builds only the hits kept: the same chunks, scores and ranks, in the same order,
    as the first `limit` of the whole fused list (ties included: many equal BM25 scores)."""
    rng = np.random.default_rng(7)
    ids = [f"c{n}" for n in range(60)]
    bm25 = [hit(i, float(s)) for i, s in zip(rng.permutation(ids)[:40], sorted(rng.integers(1, 6, 40))[::-1],
                                             strict=True)]
    knn = [hit(i, float(s)) for i, s in zip(rng.permutation(ids)[:40], sorted(rng.random(40))[::-1], strict=True)]
    fusion = Fusion(method=method)
    whole = fuse({"bm25": bm25, "knn": knn}, fusion=fusion)
    for limit in (1, 10, 59, 200):
        head = fuse({"bm25": bm25, "knn": knn}, fusion=fusion, limit=limit)
        assert [(h.chunk_id, h.score, h.ranks) for h in head] == [(h.chunk_id, h.score, h.ranks)
                                                                  for h in whole[:limit]]
    assert len({h.chunk_id for h in whole}) == len(whole) == len({h.chunk_id for h in bm25 + knn})


def test_feedback_moves_only_where_a_candidate_has_votes_and_the_boost_is_on():
    quiet = lists()
    assert not feedback_moves(quiet, Fusion(feedback_weight=0.5, context_weight=3.0))
    voted = lists()
    voted["knn"][2].feedback = -0.4
    assert feedback_moves(voted, Fusion(feedback_weight=0.5))
    assert not feedback_moves(voted, Fusion(feedback_weight=0.0, context_weight=0.0))
    profiled = lists()
    profiled["bm25"][1].feedback_profile = b"x"
    assert feedback_moves(profiled, Fusion(feedback_weight=0.0, context_weight=1.0))


def test_fusion_parameters_are_checked_and_read_from_settings():
    with pytest.raises(ValueError, match="Unknown fusion 'borda'"):
        Fusion(method="borda")
    with pytest.raises(ValueError):
        Fusion(candidates=0)
    with pytest.raises(ValueError, match="cosine"):
        Fusion(context_threshold=1.0)
    with pytest.raises(ValueError, match="prior"):
        Fusion(context_prior=0.0)
    with override_settings(SEARCH_FUSION="convex", SEARCH_BM25_WEIGHT=0.3, SEARCH_KNN_WEIGHT=0.7,
                           SEARCH_CANDIDATES=40, SEARCH_FEEDBACK_WEIGHT=0.5, SEARCH_FEEDBACK_CONTEXT_WEIGHT=2.0,
                           SEARCH_FEEDBACK_CONTEXT_THRESHOLD=0.6, SEARCH_FEEDBACK_CONTEXT_PRIOR=0.5):
        assert default_fusion() == Fusion(method="convex", rrf_k=default_fusion().rrf_k, bm25_weight=0.3,
                                          knn_weight=0.7, candidates=40, feedback_weight=0.5, context_weight=2.0,
                                          context_threshold=0.6, context_prior=0.5)


def test_feedback_hook_is_neutral_at_weight_zero_and_moves_hits_otherwise():
    hits = [hit("a1", 1.0), hit("b2", 0.9)]
    hits[1].feedback = 1.0
    assert [h.chunk_id for h in apply_feedback(hits, weight=0.0)] == ["a1", "b2"]
    assert [h.chunk_id for h in apply_feedback(hits, weight=0.5)] == ["b2", "a1"]


def test_context_boost_follows_the_voters_questions():
    """b2 was voted up by someone asking `asked`: asking the same again lifts it over a1, an
    unrelated question leaves the order alone, and the chunk's own score plays no part here."""
    asked, other = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    profile = QuestionProfile.from_votes([(1.0, asked)]).encode()

    def ranked(question):
        hits = [hit("a1", 1.0), hit("b2", 0.9)]
        hits[1].feedback_profile = profile
        return [h.chunk_id for h in apply_feedback(hits, weight=0.0, context_weight=1.0, question=question,
                                                   context_threshold=0.7, context_prior=0.25)]

    assert ranked(asked) == ["b2", "a1"]
    assert ranked(other) == ["a1", "b2"]
    assert ranked(None) == ["a1", "b2"]  # no question (no vector): no context


def test_highlight_marks_query_terms_in_escaped_sentences():
    text = ("Cats sleep a lot. Proteins <b>fold</b> & misfold in cells. Nothing here. "
            "A protein's shape matters.")
    marked = highlight(text, "protein folding")
    assert marked == ("<mark>Proteins</mark> &lt;b&gt;<mark>fold</mark>&lt;/b&gt; &amp; misfold in cells."
                      " … A <mark>protein</mark>&#x27;s shape matters.")
    # No query word in the passage (a match by meaning): its first sentence, unmarked.
    assert highlight(text, "feline naps") == "Cats sleep a lot."
    assert highlight("<script>x</script>", "zebra") == "&lt;script&gt;x&lt;/script&gt;"


def test_sentence_ends_are_those_of_the_plain_form_of_the_rule():
    """SENTENCE_END tests its cheap conditions first (a speed-up for highlighting); the matches
    must be those of the rule as first written, abbreviations' look-behinds first, on random text
    made of the characters and words the rule looks at."""
    import random
    import re

    from chat.text import _ABBREVIATIONS, SENTENCE_END

    plain = re.compile(_ABBREVIATIONS + r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])"
                       r"|(?<=[a-z0-9)\]][.!?])(?=[A-Z])|\n\s*\n|\n(?=\s*[-*\u2022]\s)")
    pieces = [*"aZ0.!? \n\t\"')][(-*\u2022", "Dr.", "e.g.", "i.e.", "al.", "Fig.", "cf.", "No.", " The", "x. A"]
    rng = random.Random(17)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(20000)]
    for text in texts:
        assert [m.span() for m in SENTENCE_END.finditer(text)] == [m.span() for m in plain.finditer(text)], text
    assert sum(bool(SENTENCE_END.search(text)) for text in texts) > 5000  # the texts do end sentences


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="Unknown mode"):
        retrieve("anything", access=AccessFilter.staff(), mode="fuzzy")


# --- End to end: a real worker indexes, the real index answers --------------------------------
def settled(document: Document) -> Document:
    def done():
        document.refresh_from_db()
        return document.status in (Document.Status.INDEXED, Document.Status.FAILED) and document
    wait_for(done, timeout=120, message=f"document {document.pk} to be indexed")
    assert document.status == Document.Status.INDEXED, document.error
    return document


@pytest.mark.worker
def test_hybrid_fuses_bm25_and_knn_where_they_disagree(worker):
    source = SourceFactory()
    docs = {
        # Shares the word "tire" with the query, but not its meaning.
        "lexical": "The tire company reported record profits this quarter and raised its dividend.",
        # Means what the query asks, in other words: no query word appears.
        "semantic": "Fixing a punctured bike wheel: patch the inner tube, then pump it up again.",
        "other": "Emperor penguins huddle together to survive the Antarctic winter.",
    }
    ids = {name: settled(document_ingest(source=source, external_id=name, content=text.encode(),
                                         title=name.title()).document).pk
           for name, text in docs.items()}
    access = AccessFilter(everything=True, source_ids=(source.pk,))
    query = "how to repair a flat bicycle tire"

    bm25 = retrieve(query, access=access, k=10, mode="bm25")
    knn = retrieve(query, access=access, k=10, mode="knn")
    hybrid = retrieve(query, access=access, k=10, mode="hybrid")

    assert [h.document_id for h in bm25] == [ids["lexical"]]  # the only document with a query word
    assert knn[0].document_id == ids["semantic"]  # the closest in meaning
    assert {h.document_id for h in hybrid[:2]} == {ids["lexical"], ids["semantic"]}
    # Hybrid is exactly the fusion of the two lists the index gave.
    expected = fuse({"bm25": bm25, "knn": knn}, fusion=default_fusion())
    assert [(h.chunk_id, h.score) for h in hybrid] == [(h.chunk_id, pytest.approx(h.score)) for h in expected]
    assert hybrid[0].ranks and all(set(h.ranks) <= {"bm25", "knn"} for h in hybrid)


SECRET = "Quarterly revenue of the Ostrava bakery was 4,217 crowns, said auditor Zdenka Hrubesova."


@pytest.mark.worker
def test_restricted_chunks_never_reach_a_user_outside_the_group_in_any_mode(worker):
    team = GroupFactory(name="auditors")
    restricted = SourceFactory(public=False)
    restricted.groups.add(team)
    public = SourceFactory(public=True)
    secret = settled(document_ingest(source=restricted, external_id="secret", content=SECRET.encode()).document)
    bread = b"The Ostrava bakery sells rye bread."
    settled(document_ingest(source=public, external_id="bread", content=bread).document)

    member = UserFactory()
    member.groups.add(team)
    outsider = UserFactory()
    outsider.groups.add(GroupFactory(name="bakers"))  # in a group, just not the right one
    staff = UserFactory(is_staff=True)

    def restricted_source_ids(hits):
        return {h.source_id for h in hits} & {restricted.pk}

    # The restricted source's own chunk records say who may see them.
    stored = search_index().get_chunks([f"{secret.pk}-0"])[f"{secret.pk}-0"]
    assert stored.public is False and stored.groups == ("auditors",)

    for mode in MODES:
        for query in (SECRET, "Ostrava bakery revenue", "Zdenka Hrubesova"):
            seen = retrieve(query, access=access_for_user(outsider), k=50, mode=mode)
            assert not restricted_source_ids(seen), (mode, query)
            assert not restricted_source_ids(retrieve(query, access=access_for_user(None), k=50, mode=mode))
            # Narrowing to the restricted source does not open it either.
            narrowed = AccessFilter(groups=("bakers",), source_ids=(restricted.pk,))
            assert retrieve(query, access=narrowed, k=50, mode=mode) == []
        # The same query finds the secret for a member: the filter, not the query, kept it out.
        found = retrieve(SECRET, access=access_for_user(member), k=5, mode=mode)
        assert found and found[0].document_id == secret.pk, mode
        assert retrieve(SECRET, access=access_for_user(staff), k=5, mode=mode)[0].document_id == secret.pk


def test_concurrent_queries_are_embedded_in_batches_with_the_same_vectors():
    from concurrent.futures import ThreadPoolExecutor

    from chat.retrieval import QueryBatcher
    from ingestion.embedding import embedder

    model = embedder()
    texts = [f"question number {i} about glaciers and volcanoes" for i in range(16)]
    expected = model.encode(texts)
    batches: list[int] = []
    original = model.encode

    def counting(batch):
        batches.append(len(batch))
        return original(batch)

    model.encode = counting
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            vectors = list(pool.map(QueryBatcher().encode, texts))
    finally:
        del model.encode
    assert sum(batches) == 16 and len(batches) < 16  # some queries shared a forward pass
    for vector, reference in zip(vectors, expected, strict=True):
        assert vector == pytest.approx(reference.tolist(), abs=1e-5)


def test_a_repeated_query_is_embedded_once_and_the_cache_is_bounded(settings):
    from chat.retrieval import query_embedding
    from ingestion.embedding import embedder

    model = embedder()
    encoded: list[str] = []
    original = model.encode

    def counting(batch):
        encoded.extend(batch)
        return original(batch)

    settings.SEARCH_QUERY_CACHE_SIZE = 2
    query_embedding.query_cache.clear()
    model.encode = counting
    try:
        first = query_embedding.query_vector("which glaciers retreat fastest")
        again = query_embedding.query_vector("which glaciers retreat fastest")
        query_embedding.query_vector("volcano ash and aviation")
        query_embedding.query_vector("coral bleaching thresholds")  # the first query falls out (size 2)
        query_embedding.query_vector("which glaciers retreat fastest")
        settings.SEARCH_QUERY_CACHE_SIZE = 0  # off: every call encodes
        query_embedding.query_vector("coral bleaching thresholds")
    finally:
        del model.encode
        query_embedding.query_cache.clear()
    assert again == first == pytest.approx(original(["which glaciers retreat fastest"])[0].tolist(), abs=1e-5)
    assert encoded == ["which glaciers retreat fastest", "volcano ash and aviation", "coral bleaching thresholds",
                       "which glaciers retreat fastest", "coral bleaching thresholds"]
