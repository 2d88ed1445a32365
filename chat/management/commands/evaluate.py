"""`manage.py evaluate --dataset DIR`: retrieval quality on a BEIR-layout dataset, measured
through the real pipeline and the one retrieval function users get."""

from __future__ import annotations

import json
import time

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from chat.evaluation import (
    DatasetError,
    beir_load,
    corpus_ingest,
    documents_pending,
    documents_ranked,
    documents_wait,
    evaluation_report,
    evaluation_source_name,
    source_chunking_set,
)
from chat.retrieval import MODES, retrieve
from events.errors import TransientError
from ingestion.models import Document, Source
from ingestion.search_index import AccessFilter, search_index

# The evaluation source's chunking profile: one chunk holds what MiniLM reads (256 positions less
# [CLS]/[SEP]); neighbours share 32 tokens. On SciFact's train split the platform default (200/32)
# fused no better (nDCG@10 0.733 either way) with 27% more chunks to embed and search.
EVAL_CHUNK_SIZE = 254
EVAL_CHUNK_OVERLAP = 32
# Chunks asked per query: enough that the chunks map to at least 100 distinct documents for
# Recall@100 (SciFact abstracts make 1-3 chunks each).
CHUNKS_PER_DOCUMENT = 3


class Command(BaseCommand):
    help = ("Load a BEIR-layout dataset into its own source through the pipeline (a worker must run), "
            "run every query of a split through the retrieval function, and print nDCG, Recall, MRR "
            "and latency.")

    def add_arguments(self, parser):
        parser.add_argument("--dataset", metavar="DIR",
                            help="Folder with corpus.jsonl[.gz], queries.jsonl and qrels/SPLIT.tsv.")
        parser.add_argument("--cases", action="store_true",
                            help="Run the reviewers' evaluation cases (made from feedback in the admin) instead "
                                 "of a dataset: `manage.py evaluate_cases`.")
        parser.add_argument("--split", default="test", help="The qrels split to evaluate (default test).")
        parser.add_argument("--k", type=int, default=10, help="Cut-off for nDCG and MRR (default 10).")
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
        parser.add_argument("--limit", type=int, default=None, metavar="N", help="Evaluate the first N queries.")
        parser.add_argument("--chunk-size", type=int, default=EVAL_CHUNK_SIZE,
                            help=f"Tokens per chunk for the evaluation source (default {EVAL_CHUNK_SIZE}).")
        parser.add_argument("--chunk-overlap", type=int, default=EVAL_CHUNK_OVERLAP,
                            help=f"Tokens shared by neighbouring chunks (default {EVAL_CHUNK_OVERLAP}).")
        parser.add_argument("--timeout", type=float, default=3600,
                            help="Seconds to wait for the pipeline to index the corpus (default 3600).")

    def handle(self, *args, dataset, split, k, mode, limit, chunk_size, chunk_overlap, timeout, **options):
        if k < 1:
            raise CommandError("--k must be at least 1.")
        if options["cases"]:
            if dataset:
                raise CommandError("Give --dataset or --cases, not both.")
            call_command("evaluate_cases", mode=mode, k=k, json=options["json"], stdout=self.stdout,
                         stderr=self.stderr)
            return
        if not dataset:
            raise CommandError("Give --dataset DIR (a BEIR-layout dataset), or --cases.")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        if chunk_size < 16 or chunk_overlap < 0:
            raise CommandError("--chunk-size must be at least 16 and --chunk-overlap at least 0.")
        try:
            data = beir_load(dataset, split=split)
        except DatasetError as error:
            raise CommandError(str(error)) from None
        if not data.queries:
            raise CommandError(f"Split {split!r} has no queries that queries.jsonl knows.")
        if data.skipped_queries:
            self.stderr.write(f"{len(data.skipped_queries)} judged queries are missing from queries.jsonl; skipped.")

        source = self._source(evaluation_source_name(data), chunk_size, chunk_overlap)
        loaded = corpus_ingest(dataset=data, source=source, progress=lambda rows: tqdm(
            rows, desc="loading", unit="doc", total=len(data.corpus), disable=None))
        if self._wait(source, list(loaded.documents.values()), timeout) or loaded.changed:
            self._optimize()
        failed = Document.objects.filter(source=source, status=Document.Status.FAILED).count()
        if failed:
            self.stderr.write(f"{failed} documents failed in the pipeline and cannot be retrieved.")

        external = dict(Document.objects.filter(source=source).values_list("pk", "external_id"))
        access = AccessFilter(everything=True, source_ids=(source.pk,))
        depth = max(100, k) * CHUNKS_PER_DOCUMENT
        queries = list(data.queries.items())[:limit]
        rankings: dict[str, list[str]] = {}
        latencies: list[float] = []
        retrieve("warm up the model and the index", access=access, k=1, mode=mode)
        for qid, text in tqdm(queries, desc=f"querying ({mode})", unit="query", disable=None):
            started = time.perf_counter()
            hits = retrieve(text, access=access, k=depth, mode=mode)
            latencies.append((time.perf_counter() - started) * 1000)
            rankings[qid] = documents_ranked(external[h.document_id] for h in hits if h.document_id in external)

        report = evaluation_report(mode=mode, split=split, rankings=rankings, qrels=data.qrels,
                                   latencies_ms=latencies, k=k)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json()))
            return
        self.stdout.write(f"{data.name}, split {split}, {report.queries} queries, mode {mode}, "
                          f"source {source.name!r} ({len(loaded.documents)} documents, "
                          f"{loaded.changed} new or changed)")
        rows = [(f"nDCG@{k}", f"{report.ndcg:.4f}"), (f"Recall@{report.recall_k}", f"{report.recall:.4f}"),
                (f"MRR@{k}", f"{report.mrr:.4f}"), ("latency p50 (ms)", f"{report.latency_ms_p50:.1f}"),
                ("latency p95 (ms)", f"{report.latency_ms_p95:.1f}")]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            self.stdout.write(f"{name:<{width}}  {value:>8}")

    def _source(self, name: str, chunk_size: int, chunk_overlap: int) -> Source:
        source, created = Source.objects.get_or_create(
            name=name, defaults={"kind": Source.Kind.UPLOAD, "public": False,
                                 "chunk_size": chunk_size, "chunk_overlap": chunk_overlap},
        )
        if not created and (source.chunk_size, source.chunk_overlap) != (chunk_size, chunk_overlap):
            rerun = source_chunking_set(source=source, size=chunk_size, overlap=chunk_overlap)
            self.stderr.write(f"Chunking of {name!r} changed from {source.chunk_size}/{source.chunk_overlap} "
                              f"to {chunk_size}/{chunk_overlap}: {rerun} documents go through the pipeline again.")
            source.refresh_from_db()
        return source

    def _optimize(self) -> None:
        """Fold the new rows into the index's full-text and vector indexes, so the queries run on
        the index as it serves after its scheduled compaction. The engine retries a commit that
        lost a race with another writer; if it still fails, measure anyway and say so."""
        try:
            search_index().optimize()
        except (TransientError, RuntimeError, OSError, ValueError) as error:
            self.stderr.write(f"Could not compact the index ({error}); evaluating without it.")

    def _wait(self, source: Source, document_pks: list[int], timeout: float) -> bool:
        """Wait for the pipeline to settle every document; False if none was pending."""
        if not documents_pending(source, document_pks):
            return False
        from config.celery_app import app

        if not app.control.ping(timeout=2.0):
            raise CommandError(
                "Documents are waiting for the pipeline but no Celery worker answered. Start one with the "
                "same settings (make run, or: celery -A config worker -Q parse,chunk,embed,index,feedback,"
                "sync,sinks) and run evaluate again; loaded documents are kept."
            )
        with tqdm(total=len(document_pks), desc="indexing", unit="doc", disable=None) as bar:
            def progress(done: int) -> None:
                bar.update(done - bar.n)

            try:
                documents_wait(source=source, document_pks=document_pks, timeout=timeout, on_progress=progress)
            except TimeoutError as error:
                raise CommandError(f"Timed out after {timeout:.0f}s: {error}. Is the worker still running?") from None
        return True
