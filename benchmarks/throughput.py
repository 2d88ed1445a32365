"""Throughput: the SciFact corpus through the whole pipeline, against the same chunks through
the bare model's encode() in one process, in the same run.

Starts its own worker (one process pool on every queue, as `make run` does) in a scratch
folder, ingests the corpus, waits until every document is indexed, then encodes the very same
chunk texts with the bare model. Prints documents/s, chunks/s and the ratio pipeline/bare.

    .venv/bin/python benchmarks/throughput.py [--limit N] [--concurrency 2] [--pipeline-only]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from _stack import ROOT, django_setup, worker

DATASET = ROOT.parent / "shared" / "datasets" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--limit", type=int, default=0, help="Only the first N documents (0: all).")
    parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (make run uses 2).")
    parser.add_argument("--pipeline-only", action="store_true", help="Skip the bare encode() (no ratio).")
    args = parser.parse_args()

    with gzip.open(args.dataset / "corpus.jsonl.gz", "rt") as handle:
        corpus = [json.loads(line) for line in handle]
    if args.limit:
        corpus = corpus[: args.limit]

    env = django_setup(isolated=True)
    from ingestion.embedding import embedder
    from ingestion.models import Chunk, Document
    from ingestion.services import document_ingest, source_get_or_create

    with worker(env, concurrency=args.concurrency, log=Path(env["FRESHET_VAR_DIR"]) / "worker.log"):
        source = source_get_or_create(name="benchmark-throughput")
        started = time.perf_counter()
        for row in corpus:
            document_ingest(source=source, external_id=row["_id"], title=row.get("title", ""),
                            content=row["text"].encode())
        ingested = time.perf_counter() - started
        done = (Document.Status.INDEXED, Document.Status.FAILED)
        while Document.objects.filter(source=source).exclude(status__in=done).exists():
            time.sleep(0.2)
        pipeline = time.perf_counter() - started

    failed = Document.objects.filter(source=source, status=Document.Status.FAILED).count()
    texts = list(Chunk.objects.filter(document__source=source).order_by("document_id", "ordinal")
                 .values_list("text", flat=True))
    documents, chunks = len(corpus), len(texts)
    print(f"SciFact: {documents} documents, {chunks} chunks, {failed} failed "
          f"(worker concurrency {args.concurrency}, encoder {embedder().backend}: EMBEDDING_BACKEND, the same "
          f"for the worker and the bare encode below)")
    print(f"  pipeline: {pipeline:7.1f} s  {documents / pipeline:6.1f} documents/s  {chunks / pipeline:6.1f} chunks/s"
          f"  (ingest calls took {ingested:.1f} s)")
    if args.pipeline_only:
        return
    model = embedder()
    model.encode(texts[:8])  # load and warm up outside the timing, as the worker did at start
    started = time.perf_counter()
    model.encode(texts)
    bare = time.perf_counter() - started
    print(f"  bare encode(): {bare:7.1f} s  {documents / bare:6.1f} documents/s  {chunks / bare:6.1f} chunks/s")
    print(f"  ratio pipeline/bare: {bare / pipeline:.2f}")


if __name__ == "__main__":
    main()
