"""The evaluation metrics on hand-checked qrels, BEIR loading, and `manage.py evaluate` end to end
on a four-document corpus through the real pipeline."""

from __future__ import annotations

import gzip
import json
import math
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from chat.evaluation import (
    DatasetError,
    beir_load,
    documents_ranked,
    evaluation_report,
    mrr_at,
    ndcg_at,
    percentile,
    recall_at,
)
from ingestion.models import Document, Source

# Two queries, judged by hand:
#   q1: d1 and d2 relevant (score 1); the system ranks d3, d1, d5, d2.
#   q2: d3 very relevant (2), d4 relevant (1), d9 judged not relevant (0); ranked d4, d9, d3.
QRELS = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 1, "d9": 0}}
RANKINGS = {"q1": ["d3", "d1", "d5", "d2"], "q2": ["d4", "d9", "d3"]}


def test_ndcg_by_hand():
    # q1: DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606
    #     IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.630930 = 1.630930  -> 0.650921
    assert ndcg_at(RANKINGS["q1"], QRELS["q1"], 10) == pytest.approx(0.650921, abs=1e-6)
    # Cut at 2: DCG = 0.630930, IDCG = 1.630930 -> 0.386853
    assert ndcg_at(RANKINGS["q1"], QRELS["q1"], 2) == pytest.approx(0.386853, abs=1e-6)
    # q2 (linear gain, as pytrec_eval): DCG = 1/log2(2) + 0 + 2/log2(4) = 1 + 1 = 2
    #     IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.630930 = 2.630930 -> 0.760188
    assert ndcg_at(RANKINGS["q2"], QRELS["q2"], 10) == pytest.approx(2 / (2 + 1 / math.log2(3)), abs=1e-9)
    assert ndcg_at(RANKINGS["q2"], QRELS["q2"], 10) == pytest.approx(0.760188, abs=1e-6)
    assert ndcg_at(["d1", "d2"], QRELS["q1"], 10) == 1.0
    assert ndcg_at([], QRELS["q1"], 10) == 0.0


def test_recall_and_mrr_by_hand():
    # q1: both relevant within 4 -> 1.0; within 2 only d1 -> 1/2. First relevant at rank 2 -> MRR 1/2.
    assert recall_at(RANKINGS["q1"], QRELS["q1"], 100) == 1.0
    assert recall_at(RANKINGS["q1"], QRELS["q1"], 2) == 0.5
    assert mrr_at(RANKINGS["q1"], QRELS["q1"], 10) == 0.5
    assert mrr_at(RANKINGS["q1"], QRELS["q1"], 1) == 0.0
    # q2: d9 is judged but not relevant, so it neither counts for recall nor for MRR.
    assert recall_at(RANKINGS["q2"], QRELS["q2"], 2) == 0.5
    assert mrr_at(["d9", "d3"], QRELS["q2"], 10) == 0.5


def test_the_report_averages_over_queries():
    report = evaluation_report(mode="hybrid", split="test", rankings=RANKINGS, qrels=QRELS,
                               latencies_ms=[10.0, 20.0, 30.0, 40.0])
    # nDCG@10 = (0.650921 + 0.760188) / 2 = 0.705554; Recall@100 = (1 + 1) / 2; MRR@10 = (0.5 + 1) / 2
    assert report.ndcg == pytest.approx(0.705554, abs=1e-6)
    assert report.recall == 1.0
    assert report.mrr == 0.75
    assert report.latency_ms_p50 == 25.0
    assert report.latency_ms_p95 == pytest.approx(38.5)
    assert report.as_json() == {
        "mode": "hybrid", "split": "test", "queries": 2, "ndcg@10": 0.7056, "recall@100": 1.0,
        "mrr@10": 0.75, "latency_ms_p50": 25.0, "latency_ms_p95": 38.5,
    }


def test_chunks_map_to_documents_at_their_best_position():
    assert documents_ranked(["7", "3", "7", "9", "3", "1"]) == ["7", "3", "9", "1"]


def test_percentile_interpolates_like_numpy():
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert percentile([], 50) == 0.0


CORPUS = [
    {"_id": "glacier", "title": "Glacier retreat",
     "text": "Alpine glaciers lose ice mass every summer as temperatures rise."},
    {"_id": "volcano", "title": "Volcanic ash",
     "text": "Eruptions of stratovolcanoes inject ash and sulphur into the stratosphere."},
    {"_id": "coral", "title": "Coral bleaching",
     "text": "Warm seawater makes corals expel the algae that feed them."},
    {"_id": "penguin", "title": "Penguin huddles",
     "text": "Emperor penguins huddle together to survive the Antarctic winter."},
]
QUERIES = [
    {"_id": "1", "text": "Why do glaciers lose ice mass?"},
    {"_id": "2", "text": "penguins huddle in winter"},
    {"_id": "3", "text": "a query that is judged on another split only"},
]


def write_dataset(folder: Path, *, corpus: list[dict] = CORPUS, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(row) + "\n" for row in corpus)
    if gz:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        (folder / "corpus.jsonl").write_text(lines)
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in QUERIES))
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\tglacier\t1\n2\tpenguin\t1\n")
    (folder / "qrels" / "train.tsv").write_text("3\tcoral\t1\n")
    return folder


def test_beir_load_reads_the_layout(tmp_path):
    data = beir_load(write_dataset(tmp_path / "tiny"), split="test")
    assert data.name == "tiny"
    assert [doc.id for doc in data.corpus] == ["glacier", "volcano", "coral", "penguin"]
    assert data.corpus[0].title == "Glacier retreat"
    assert data.queries == {"1": "Why do glaciers lose ice mass?", "2": "penguins huddle in winter"}
    assert data.qrels == {"1": {"glacier": 1}, "2": {"penguin": 1}}
    assert beir_load(write_dataset(tmp_path / "plain", gz=False), split="train").queries == {
        "3": "a query that is judged on another split only"}


def test_beir_load_says_what_is_missing(tmp_path):
    folder = write_dataset(tmp_path / "tiny")
    with pytest.raises(DatasetError, match=r"No qrels for split 'dev'.*splits here: test, train"):
        beir_load(folder, split="dev")
    (folder / "corpus.jsonl.gz").unlink()
    with pytest.raises(DatasetError, match="has no corpus.jsonl or corpus.jsonl.gz"):
        beir_load(folder)
    with pytest.raises(DatasetError, match="No such folder"):
        beir_load(tmp_path / "nowhere")


@pytest.mark.worker
def test_evaluate_loads_through_the_pipeline_and_reuses_unchanged_documents(worker, tmp_path):
    folder = write_dataset(tmp_path / "tinybeir")
    out, err = StringIO(), StringIO()
    call_command("evaluate", "--dataset", str(folder), "--mode", "bm25", "--json", "--timeout", "120",
                 stdout=out, stderr=err)
    report = json.loads(out.getvalue())
    assert set(report) == {"mode", "split", "queries", "ndcg@10", "recall@100", "mrr@10",
                           "latency_ms_p50", "latency_ms_p95"}
    # Each query's words occur in exactly one document, its judged one: a perfect ranking.
    assert report["mode"] == "bm25" and report["split"] == "test" and report["queries"] == 2
    assert report["ndcg@10"] == 1.0 and report["recall@100"] == 1.0 and report["mrr@10"] == 1.0
    assert report["latency_ms_p50"] > 0

    source = Source.objects.get(name="eval:tinybeir")
    assert not source.public  # staff only: evaluation data never shows up in users' searches
    documents = {d.external_id: d for d in Document.objects.filter(source=source)}
    assert set(documents) == {"glacier", "volcano", "coral", "penguin"}
    assert all(d.status == Document.Status.INDEXED and d.version == 1 for d in documents.values())
    assert documents["coral"].title == "Coral bleaching"

    # Second run, one document edited: only that one goes through the pipeline again.
    edited = [dict(row, text=row["text"] + " Reefs recover slowly.") if row["_id"] == "coral" else row
              for row in CORPUS]
    write_dataset(folder, corpus=edited)
    table = StringIO()
    call_command("evaluate", "--dataset", str(folder), "--mode", "hybrid", "--timeout", "120", stdout=table)
    versions = dict(Document.objects.filter(source=source).values_list("external_id", "version"))
    assert versions == {"glacier": 1, "volcano": 1, "coral": 2, "penguin": 1}
    assert "4 documents, 1 new or changed" in table.getvalue()
    assert "nDCG@10" in table.getvalue() and "Recall@100" in table.getvalue()


@pytest.mark.django_db
def test_evaluate_refuses_bad_arguments(tmp_path):
    with pytest.raises(CommandError, match="No such folder"):
        call_command("evaluate", "--dataset", str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="--k must be at least 1"):
        call_command("evaluate", "--dataset", str(write_dataset(tmp_path / "tiny")), "--k", "0")
