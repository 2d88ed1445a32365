"""The LanceDB engine's per-query cost, in process: kNN by LanceDB's exhaustive search against kNN
in memory (ingestion/search_index/lancedb_vectors.py), and BM25 by LanceDB's full-text index
against BM25 in memory (lancedb_bm25.py), on a scratch index of SciFact abstracts with random unit
vectors (the cost of a query does not depend on what the vectors mean). BM25 lists are compared
by their scores, to float32's precision (SciFact abstracts repeat past 5,183 rows, so equal scores
come in either order).

Interleaved (each query through every path in turn); CPU time is the process's (all threads).

    .venv/bin/python benchmarks/search_engine.py [--rows 10000] [--queries 200] [--dimension 384]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _stack import ROOT  # noqa: F401  (puts the project on sys.path)

DATASET = Path("/work/shared/datasets/scifact")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--k", type=int, default=100, help="Candidates per list (SEARCH_CANDIDATES).")
    args = parser.parse_args()

    from ingestion.search_index.base import AccessFilter, ChunkRecord, DocumentChunks
    from ingestion.search_index.lancedb_engine import LanceDBIndex

    with gzip.open(DATASET / "corpus.jsonl.gz", "rt") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    lines = (DATASET / "queries.jsonl").read_text().splitlines()[: args.queries]
    queries = [json.loads(line)["text"] for line in lines]
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="freshet-search-engine-"))
    memory = LanceDBIndex(folder, search_lag_seconds=0.1)
    batch = []
    for row in range(args.rows):
        v = rng.normal(size=args.dimension)
        batch.append(DocumentChunks(row + 1, 1, [ChunkRecord(
            id=f"{row + 1}-0", document_id=row + 1, source_id=1 + row % 3, ordinal=0, version=1, title="",
            text=texts[row % len(texts)], uri="", vector=(v / np.linalg.norm(v)).tolist(), public=True, groups=())]))
        if len(batch) == 1000:
            memory.upsert_documents(batch)
            batch = []
    if batch:
        memory.upsert_documents(batch)
    memory.optimize()
    lance = LanceDBIndex(folder, search_lag_seconds=0.1, memory_knn_rows=0)
    access = AccessFilter(groups=("staff-less",), source_ids=(1, 2))  # a prefilter, as users' searches have
    vectors = [(v / np.linalg.norm(v)).tolist() for v in rng.normal(size=(len(queries), args.dimension))]

    paths = {
        "kNN LanceDB": lambda i: lance.knn(vectors[i], k=args.k, access=access),
        "kNN in memory": lambda i: memory.knn(vectors[i], k=args.k, access=access),
        "BM25 LanceDB": lambda i: lance.bm25(queries[i], k=args.k, access=access),
        "BM25 in memory": lambda i: memory.bm25(queries[i], k=args.k, access=access),
    }
    for run in paths.values():  # warm up: open tables, take the snapshot
        run(0)
    wall = {name: [] for name in paths}
    cpu = {name: [] for name in paths}
    agree = agree_bm25 = 0
    for i in range(len(queries)):
        for name, run in paths.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            hits = run(i)
            wall[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append((time.process_time() - started_cpu) * 1000)
            if name == "kNN LanceDB":
                expected = [h.chunk_id for h in hits]
            elif name == "kNN in memory":
                agree += [h.chunk_id for h in hits] == expected
            elif name == "BM25 LanceDB":
                expected_scores = [h.score for h in hits]
            elif name == "BM25 in memory":
                scores = [h.score for h in hits]
                same = len(scores) == len(expected_scores) and np.allclose(scores, expected_scores, rtol=1e-5)
                agree_bm25 += bool(same)
    print(f"{args.rows} rows x {args.dimension} dimensions, {len(queries)} queries, k={args.k}, "
          f"prefiltered by access; memory kNN equal to LanceDB's on {agree}/{len(queries)} queries, "
          f"memory BM25's scores on {agree_bm25}/{len(queries)}")
    for name in paths:
        p95 = sorted(wall[name])[int(0.95 * len(wall[name]))]
        print(f"  {name:14s} wall p50 {statistics.median(wall[name]):6.2f} ms  p95 {p95:6.2f} ms  "
              f"CPU mean {statistics.fmean(cpu[name]):6.2f} ms")


if __name__ == "__main__":
    main()
