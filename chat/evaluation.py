"""Retrieval evaluation on BEIR-layout datasets: loading, ingestion through the real pipeline,
and the ranking metrics (nDCG@k, Recall@k, MRR@k).

BEIR judges documents, the index returns chunks: a document ranks at its best chunk's position
and its later chunks are dropped (`documents_ranked`). Metrics follow pytrec_eval, which BEIR
uses: linear gain (the judged score itself), log2 discount, the ideal ranking built from every
judged-relevant document of the query.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from ingestion.models import Document, Source

Qrels = dict[str, dict[str, int]]  # query id -> document id -> relevance (0 = judged not relevant)


class DatasetError(ValueError):
    """The folder is not a readable BEIR dataset; the message says what is missing or wrong."""


@dataclass(frozen=True)
class CorpusDocument:
    id: str
    title: str
    text: str


@dataclass
class BeirDataset:
    name: str
    corpus: list[CorpusDocument]
    queries: dict[str, str]  # the split's queries only (those with judgements)
    qrels: Qrels
    split: str = "test"
    skipped_queries: list[str] = field(default_factory=list)  # judged but absent from queries.jsonl


# --- Loading ----------------------------------------------------------------------------------
def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}, line {number}: not JSON ({error.msg}).") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise DatasetError(f"{path}, line {number}: expected an object with an '_id'.")
            yield row


def _first_existing(folder: Path, names: Iterable[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    listed = " or ".join(names)
    raise DatasetError(f"{folder} has no {listed}; is it a BEIR-layout dataset?")


def qrels_read(path: Path) -> Qrels:
    """Read a BEIR qrels TSV (`query-id corpus-id score`, with or without a header line)."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or (number == 1 and parts[0] == "query-id"):
                continue
            if len(parts) < 3:
                raise DatasetError(f"{path}, line {number}: expected 3 tab-separated columns.")
            try:
                score = int(parts[2])
            except ValueError:
                raise DatasetError(f"{path}, line {number}: score {parts[2]!r} is not an integer.") from None
            qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


def beir_load(folder: Path | str, *, split: str = "test") -> BeirDataset:
    """Load a BEIR-layout folder: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/SPLIT.tsv."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"No such folder: {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DatasetError(f"No qrels for split {split!r} ({qrels_path}); splits here: {', '.join(splits) or 'none'}.")
    corpus = [
        CorpusDocument(id=str(row["_id"]), title=str(row.get("title") or ""), text=str(row.get("text") or ""))
        for row in _jsonl(_first_existing(folder, ["corpus.jsonl", "corpus.jsonl.gz"]))
    ]
    qrels = qrels_read(qrels_path)
    all_queries = {
        str(row["_id"]): str(row.get("text") or "")
        for row in _jsonl(_first_existing(folder, ["queries.jsonl", "queries.jsonl.gz"]))
    }
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    skipped = sorted(qid for qid in qrels if qid not in all_queries)
    return BeirDataset(name=folder.name, corpus=corpus, queries=queries, qrels=qrels, split=split,
                       skipped_queries=skipped)


# --- Metrics ----------------------------------------------------------------------------------
def documents_ranked(document_ids: Iterable[str]) -> list[str]:
    """Chunk results mapped to documents: each document at its first (best) position, later
    occurrences dropped."""
    seen: set[str] = set()
    ranked: list[str] = []
    for document_id in document_ids:
        if document_id not in seen:
            seen.add(document_id)
            ranked.append(document_id)
    return ranked


def ndcg_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    ideal = sorted((score for score in judged.values() if score > 0), reverse=True)[:k]
    idcg = sum(score / math.log2(rank + 1) for rank, score in enumerate(ideal, start=1))
    if not idcg:
        return 0.0
    dcg = sum(judged.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1)
              if judged.get(doc, 0) > 0)
    return dcg / idcg


def recall_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    relevant = {doc for doc, score in judged.items() if score > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: list[str], judged: dict[str, int], k: int) -> float:
    for rank, doc in enumerate(ranked[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), `q` in 0..100."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class EvaluationReport:
    mode: str
    split: str
    queries: int
    k: int
    ndcg: float  # nDCG@k
    recall: float  # Recall@max(100, k)
    mrr: float  # MRR@k
    latency_ms_p50: float
    latency_ms_p95: float

    @property
    def recall_k(self) -> int:
        return max(100, self.k)

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.mode, "split": self.split, "queries": self.queries,
            f"ndcg@{self.k}": round(self.ndcg, 4), f"recall@{self.recall_k}": round(self.recall, 4),
            f"mrr@{self.k}": round(self.mrr, 4),
            "latency_ms_p50": round(self.latency_ms_p50, 1), "latency_ms_p95": round(self.latency_ms_p95, 1),
        }


def evaluation_report(*, mode: str, split: str, rankings: dict[str, list[str]], qrels: Qrels,
                      latencies_ms: list[float], k: int = 10) -> EvaluationReport:
    """Average the metrics over the queries in `rankings` (query id -> ranked BEIR doc ids)."""
    count = len(rankings)

    def mean(metric: Callable[[list[str], dict[str, int], int], float], cut: int) -> float:
        if not count:
            return 0.0
        return sum(metric(ranked, qrels.get(qid, {}), cut) for qid, ranked in rankings.items()) / count

    return EvaluationReport(
        mode=mode, split=split, queries=count, k=k,
        ndcg=mean(ndcg_at, k), recall=mean(recall_at, max(100, k)), mrr=mean(mrr_at, k),
        latency_ms_p50=percentile(latencies_ms, 50), latency_ms_p95=percentile(latencies_ms, 95),
    )


# --- Loading a dataset into its own source, through the real pipeline --------------------------
def evaluation_source_name(dataset: BeirDataset) -> str:
    return f"eval:{dataset.name}"


@dataclass(frozen=True)
class LoadSummary:
    source: Source
    documents: dict[str, int]  # BEIR id -> Document pk
    changed: int


def corpus_ingest(*, dataset: BeirDataset, source: Source,
                  progress: Callable[[Iterable[CorpusDocument]], Iterable[CorpusDocument]] = iter) -> LoadSummary:
    """Create or update one document per corpus entry (external id = BEIR id). Unchanged
    documents start no work: `document_ingest` compares content, title and uri."""
    from ingestion.services import document_ingest

    documents: dict[str, int] = {}
    changed = 0
    for entry in progress(dataset.corpus):
        text = entry.text if entry.text.strip() else entry.title
        result = document_ingest(
            source=source, external_id=entry.id, content=text.encode("utf-8"),
            filename=f"{entry.id}.txt", title=entry.title[:500] or entry.id,
        )
        documents[entry.id] = result.document.pk
        changed += result.changed
    return LoadSummary(source=source, documents=documents, changed=changed)


def documents_pending(source: Source, document_pks: Iterable[int]) -> int:
    """How many of these documents of `source` are still in the pipeline (neither indexed nor
    failed). One COUNT query: the wait below polls it."""
    settled = (Document.Status.INDEXED, Document.Status.FAILED)
    return Document.objects.filter(source=source, pk__in=list(document_pks)).exclude(status__in=settled).count()


@transaction.atomic
def source_chunking_set(*, source: Source, size: int, overlap: int) -> int:
    """Give `source` a new chunking profile and send its documents whose index copy was cut
    differently back through the pipeline; returns how many.

    Done here in one transaction, not left to the source.changed subscriber alone: the documents
    are pending before anyone can observe the new profile, so a wait that starts right after
    cannot mistake the old index copy for the new one, and the subscriber (which re-runs only
    documents still marked indexed) finds nothing left to do.
    """
    from ingestion.services import document_reindex

    source = Source.objects.select_for_update().get(pk=source.pk)
    source.chunk_size, source.chunk_overlap = size, overlap
    source.save(update_fields=["chunk_size", "chunk_overlap"])
    rerun = 0
    for document in source.documents.select_related("source").filter(status=Document.Status.INDEXED).iterator():
        if document.indexed_fingerprint != document.fingerprint():
            document_reindex(document=document)
            rerun += 1
    return rerun


def documents_wait(*, source: Source, document_pks: list[int], timeout: float,
                   on_progress: Callable[[int], None] = lambda done: None, poll: float = 2.0) -> None:
    """Block until every document is indexed or failed; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pending = documents_pending(source, document_pks)
        on_progress(len(document_pks) - pending)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} of {len(document_pks)} documents still processing")
        time.sleep(poll)
