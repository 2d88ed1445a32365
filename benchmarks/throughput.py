"""Throughput: the SciFact corpus through the whole pipeline, against the same chunks through
the bare model's encode() in one process, in the same run.

Starts its own worker (one process pool on every queue, as `make run` does) in a scratch
folder, with the encoder backend this process resolved EMBEDDING_BACKEND to (so `auto` cannot
pick another one there; a worker that fell back to another backend is reported), sends one
document through to warm the pipeline, ingests the corpus, waits until every document is
indexed, then encodes the very same chunk texts with the bare model of that backend. Prints
documents/s, chunks/s and the ratio pipeline/bare, in wall time and in CPU time (the worker's
processes, all of them, against the bare encode's process: the fairer figure on a machine
shared with other work).

    .venv/bin/python benchmarks/throughput.py [--limit N] [--concurrency 2] [--pipeline-only]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

from _stack import ROOT, django_setup, worker

DATASET = ROOT.parent / "shared" / "datasets" / "scifact"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its live descendants (the worker's pool)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def settle(documents, done) -> None:
    while documents.exclude(status__in=done).exists():
        time.sleep(0.2)


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

    model = embedder()
    model.encode(["warm up"])  # here first: an encoder graph to export is exported before the worker starts
    env["EMBEDDING_BACKEND"] = model.backend
    log = Path(env["FRESHET_VAR_DIR"]) / "worker.log"
    done = (Document.Status.INDEXED, Document.Status.FAILED)
    with worker(env, concurrency=args.concurrency, log=log) as process:
        warm = source_get_or_create(name="benchmark-warm-up")
        document_ingest(source=warm, external_id="warm-up", content=b"One document to warm the pipeline up.")
        settle(Document.objects.filter(source=warm), done)
        source = source_get_or_create(name="benchmark-throughput")
        cpu_before, own_before = cpu_seconds(process.pid), time.process_time()
        started = time.perf_counter()
        for row in corpus:
            document_ingest(source=source, external_id=row["_id"], title=row.get("title", ""),
                            content=row["text"].encode())
        ingested, ingest_cpu = time.perf_counter() - started, time.process_time() - own_before
        settle(Document.objects.filter(source=source), done)
        pipeline = time.perf_counter() - started
        worker_cpu = cpu_seconds(process.pid) - cpu_before
    logged = log.read_text(errors="replace")
    fell_back = "Embedding backend" in logged and "unavailable" in logged

    failed = Document.objects.filter(source=source, status=Document.Status.FAILED).count()
    texts = list(Chunk.objects.filter(document__source=source).order_by("document_id", "ordinal")
                 .values_list("text", flat=True))
    documents, chunks = len(corpus), len(texts)
    print(f"SciFact: {documents} documents, {chunks} chunks, {failed} failed (worker concurrency "
          f"{args.concurrency}, encoder {model.backend} for the worker and the bare encode below"
          f"{'; THE WORKER FELL BACK TO ANOTHER BACKEND, see ' + str(log) if fell_back else ''})")
    print(f"  pipeline: {pipeline:7.1f} s  {documents / pipeline:6.1f} documents/s  {chunks / pipeline:6.1f} chunks/s"
          f"  worker CPU {worker_cpu:.1f} s  (ingest calls took {ingested:.1f} s, {ingest_cpu:.1f} s of CPU)")
    if args.pipeline_only:
        return
    model.encode(texts[:8])  # warm, as the worker was
    started, cpu_started = time.perf_counter(), time.process_time()
    model.encode(texts)
    bare, bare_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"  bare encode(): {bare:7.1f} s  {documents / bare:6.1f} documents/s  {chunks / bare:6.1f} chunks/s"
          f"  CPU {bare_cpu:.1f} s")
    print(f"  ratio pipeline/bare: {bare / pipeline:.2f} in wall time; in CPU time {bare_cpu / worker_cpu:.2f} "
          f"(the worker's), {bare_cpu / (worker_cpu + ingest_cpu):.2f} (with the ingest calls')")


if __name__ == "__main__":
    main()
