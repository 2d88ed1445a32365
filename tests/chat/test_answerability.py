"""The answerability evidence (chat/retrieval/answerability.py), from candidate lists made by hand."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from chat.retrieval.answerability import COEFFICIENTS, FEATURES, Evidence, content_terms, relevance, term_rarity
from chat.retrieval.selectors import evidence_for
from ingestion.search_index import SearchHit


def hit(chunk_id: str, text: str, score: float) -> SearchHit:
    document, ordinal = map(int, chunk_id.split("-"))
    return SearchHit(chunk_id=chunk_id, document_id=document, source_id=1, ordinal=ordinal,
                     title="", text=text, uri="", score=score)


TOPIC = [f"Glaciers retreat as the climate warms; note {n}." for n in range(8)]


def test_a_word_every_candidate_shares_weighs_less_than_one_that_singles_out_a_passage():
    terms = content_terms("Do glaciers calve icebergs?")
    rarity = term_rarity(terms, [*TOPIC, "Glaciers calve icebergs into fjords."])
    assert set(rarity) == terms == {"glacier", "calve", "iceberg"}
    assert rarity["calve"] == rarity["iceberg"] > rarity["glacier"] > 0
    assert term_rarity(frozenset(), TOPIC) == {}


def test_a_term_counts_where_a_word_starts_with_it_and_no_longer_question_term_does():
    terms = frozenset({"cell", "cellular", "activ", "19"})
    texts = ["Intracellular signalling in COVID-19.", "Cellular activation.", "The cell_cycle arrests.",
             "Cells were activated", "Inactive", "19th-century cells"]
    rarity = term_rarity(terms, texts)
    # "cell": "cell_cycle", "Cells", "cells" (not "Intracellular"; "Cellular" is the longer term's)
    assert rarity == pytest.approx({term: math.log(7 / (df + 0.5))
                                    for term, df in {"cell": 3, "cellular": 1, "activ": 2, "19": 2}.items()})
    # the same as the regular expression it replaces, a word start matching the longest term
    pattern = re.compile(r"\b(" + "|".join(sorted(terms, key=len, reverse=True)) + ")")
    found = [set(pattern.findall(text.lower())) for text in texts]
    assert rarity == {term: math.log(7 / (sum(term in f for f in found) + 0.5)) for term in terms}


def test_the_adjacent_evidence_reads_the_chunks_next_to_the_passage_among_the_candidates():
    question = "Do glaciers calve icebergs?"
    head, tail = hit("9-0", "Glaciers calve.", 0.6), hit("9-1", "Icebergs drift into fjords.", 0.5)
    others = [hit(f"{n + 1}-0", text, 0.4) for n, text in enumerate(TOPIC)]
    found = evidence_for(question, [head, tail, others[0]], bm25_hits=[head], knn_hits=[head, tail, *others])
    assert found[0].rare_overlap < found[0].adjacent_rare_overlap == pytest.approx(1.0)
    assert found[1].rare_overlap < found[1].adjacent_rare_overlap == pytest.approx(1.0)
    assert found[2].adjacent_rare_overlap == found[2].rare_overlap  # no chunk of its document next to it
    far = replace(tail, chunk_id="9-2", ordinal=2)  # the same document, not next to the passage
    alone = evidence_for(question, [head], bm25_hits=[head], knn_hits=[head, far, *others])[0]
    assert alone.adjacent_rare_overlap == alone.rare_overlap < 1.0


def test_the_evidence_tells_the_passage_with_the_rare_words_from_its_topic_neighbours():
    question = "Do glaciers calve icebergs?"
    answer = hit("9-0", "Glaciers calve icebergs into fjords.", 0.62)
    neighbour = hit("1-0", TOPIC[0], 0.60)
    bm25 = [replace(answer, score=8.0), replace(neighbour, score=2.0), hit("2-0", TOPIC[1], 1.0)]
    knn = [answer, neighbour, *(hit(f"{n + 2}-0", text, 0.5) for n, text in enumerate(TOPIC[1:]))]
    lone = hit("99-0", "Sea ice thins in summer.", 0.0)  # in neither list

    found = evidence_for(question, [answer, neighbour, lone], bm25_hits=bm25, knn_hits=knn)
    by_answer, by_neighbour, by_lone = found
    assert (by_answer.lexical_rank, by_answer.lexical_share, by_answer.both) == (1.0, 1.0, 1.0)
    assert (by_neighbour.lexical_rank, by_neighbour.lexical_share) == (0.5, 0.25)
    assert (by_lone.lexical_rank, by_lone.lexical_share, by_lone.both) == (0.0, 0.0, 0.0)
    assert by_lone.cosine == 0.5  # the kNN list's lowest: an upper bound of its own
    assert by_answer.rare_overlap == pytest.approx(1.0) and 0 < by_neighbour.rare_overlap < 0.2
    assert by_answer.overlap == 1.0 and by_neighbour.overlap == pytest.approx(1 / 3)
    assert relevance(by_answer) > relevance(by_neighbour) > relevance(by_lone)


def test_the_model_reads_every_feature_it_has_a_coefficient_for():
    evidence = Evidence(cosine=0.5, lead=0.1, overlap=0.5, both=1.0, lexical_rank=0.5, lexical_share=0.8,
                        rare_overlap=0.4, adjacent_rare_overlap=0.6)
    assert set(COEFFICIENTS) == {"bias", *FEATURES}
    assert evidence.feature("cosine*rare_overlap") == pytest.approx(0.2)
    assert evidence.feature("cosine*adjacent_rare_overlap") == pytest.approx(0.3)
    assert set(evidence.as_dict()) == {"cosine", "lead", "overlap", "both", "lexical_rank", "lexical_share",
                                       "rare_overlap", "adjacent_rare_overlap"}
    assert 0 < relevance(evidence) < 1
