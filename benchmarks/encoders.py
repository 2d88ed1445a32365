"""Encoder backends side by side in one run: texts/s at the best forward batch, one-query latency,
cosine to fp32 torch, and SciFact test kNN nDCG@10 (abstracts encoded whole, exact dot product).

The throughput and latency rounds are interleaved (every backend once per round, in a rotating
order), so a machine whose load changes during the run slows every backend alike: compare the
ratios to torch fp32, not the absolute figures, between runs.

    .venv/bin/python benchmarks/encoders.py [--backends torch,openvino,...] [--texts 400]
        [--rounds 3] [--batches 4,8,16] [--threads 2] [--ndcg-queries 0] [--corpus 0] [--skip-ndcg]

--corpus N ranks among the documents judged for the (first --ndcg-queries) test queries plus the
first N others (0: the whole corpus, 5,183 abstracts: an encode of the corpus per backend, minutes
each here). The table is printed before the nDCG encodes start.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from _stack import django_setup

DATASET = Path("/work/shared/datasets/scifact")
ALL = ("torch", "torch-bf16", "openvino", "onnx-int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--backends", default=",".join(ALL))
    parser.add_argument("--texts", type=int, default=400, help="Abstracts encoded per throughput measurement.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="4,8,16", help="Forward batch sizes tried per backend.")
    parser.add_argument("--threads", type=int, default=2, help="Threads for throughput (latency: 1).")
    parser.add_argument("--queries", type=int, default=50, help="One-text encodes per latency measurement.")
    parser.add_argument("--corpus", type=int, default=0, help="Distractor documents for nDCG (0: all).")
    parser.add_argument("--ndcg-queries", type=int, default=0, help="Test queries for nDCG (0: all 300).")
    parser.add_argument("--skip-ndcg", action="store_true")
    args = parser.parse_args()

    django_setup(isolated=False)
    import torch

    from chat.evaluation import beir_load, ndcg_at
    from ingestion.embedding import Embedder
    from ingestion.encoders import cpu_flags, has_bf16, runner_for

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    data = beir_load(args.dataset, split="test")
    texts = [f"{d.title}\n{d.text}" for d in data.corpus[: args.texts]]
    queries = list(data.queries.values())[: args.queries]

    print(f"CPU: {len(cpu_flags())} flags, bf16 native: {has_bf16()}, avx512f: {'avx512f' in cpu_flags()}; "
          f"torch {torch.__version__}; {args.texts} SciFact abstracts, {args.rounds} interleaved rounds")
    models = {b: Embedder(backend=b) for b in backends}
    single = {}
    for backend, model in models.items():
        started = time.perf_counter()
        model.forward_batch = batches[0]
        model.encode(texts[:4])  # load (and export, the first time) outside the timing
        single[backend] = (runner_for(model.path, backend=backend, device="cpu", threads=1,
                                      cache_dir=model.cache_dir) if not backend.startswith("torch") else model.runner)
        print(f"  {backend:11s} loaded in {time.perf_counter() - started:5.1f} s")

    rates: dict[str, dict[int, list[float]]] = {b: {n: [] for n in batches} for b in backends}
    latency: dict[str, list[float]] = {b: [] for b in backends}
    vectors: dict[str, np.ndarray] = {}
    for round_number in range(args.rounds):
        order = backends[round_number % len(backends):] + backends[: round_number % len(backends)]
        for backend in order:
            model = models[backend]
            torch.set_num_threads(args.threads)
            for size in batches:
                model.forward_batch = size
                started = time.perf_counter()
                vectors[backend] = model.encode(texts)
                rates[backend][size].append(len(texts) / (time.perf_counter() - started))
            torch.set_num_threads(1)
            runner = single[backend]
            started = time.perf_counter()
            for query in queries:
                runner.encode([query], batch_size=1)
            latency[backend].append((time.perf_counter() - started) / len(queries) * 1000)
        print(f"  round {round_number + 1} done")
    torch.set_num_threads(args.threads)

    reference = vectors.get("torch")
    base_rate = max(statistics.median(v) for v in rates["torch"].values()) if "torch" in rates else None
    print("\n| backend | texts/s (best batch) | vs torch fp32 | one query, 1 thread | cosine to fp32 mean / min |")
    print("| --- | --- | --- | --- | --- |")
    for backend in backends:
        best = max(batches, key=lambda n: statistics.median(rates[backend][n]))
        rate = statistics.median(rates[backend][best])
        cos = (vectors[backend] * reference).sum(axis=1) if reference is not None else np.array([np.nan])
        ratio = f"{rate / base_rate:.2f}" if base_rate else "-"
        print(f"| {backend} | {rate:.1f} (batch {best}) | {ratio} | {statistics.median(latency[backend]):.1f} ms "
              f"| {cos.mean():.5f} / {cos.min():.5f} |")
    print("per batch size (median texts/s): " + "; ".join(
        f"{b}: " + ", ".join(f"{n}→{statistics.median(rates[b][n]):.1f}" for n in batches) for b in backends))

    if not args.skip_ndcg:
        asked_ids = list(data.queries)[: args.ndcg_queries or None]
        judged = {doc for qid in asked_ids for doc in data.qrels[qid]}
        corpus = [d for d in data.corpus if d.id in judged]
        others = [d for d in data.corpus if d.id not in judged]
        corpus += others if not args.corpus else others[: args.corpus]
        ids = [d.id for d in corpus]
        for backend in backends:
            model = models[backend]
            model.forward_batch = max(batches, key=lambda n: statistics.median(rates[backend][n]))
            started = time.perf_counter()
            documents = model.encode([f"{d.title}\n{d.text}" for d in corpus])
            asked = model.encode([data.queries[qid] for qid in asked_ids])
            top = np.argsort(-(asked @ documents.T), axis=1)[:, :10]
            ndcg = statistics.fmean(
                ndcg_at([ids[i] for i in row], data.qrels[qid], 10) for qid, row in zip(asked_ids, top, strict=True))
            print(f"  SciFact kNN nDCG@10 {backend}: {ndcg:.4f} ({len(asked_ids)} test queries, {len(corpus)} "
                  f"documents; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
