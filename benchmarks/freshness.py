"""Freshness: time from the ingest call to the first search hit for a phrase unique to the document.

50 documents of about 5 KB, one at a time. By default it runs against the `make run` stack
(same environment: var/ SQLite + LanceDB, its worker must be running); `--isolated` starts its own
worker in a scratch folder instead.

    make run &            # in another terminal
    .venv/bin/python benchmarks/freshness.py [--documents 50] [--isolated]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import string
import time

from _stack import django_setup, percentile, worker


def document_text(rng: random.Random, phrase: str, size: int = 5000) -> str:
    words = ["river", "index", "update", "source", "stream", "policy", "meeting", "budget", "release",
             "customer", "report", "incident", "schedule", "contract", "project", "quarter", "review"]
    body = []
    while sum(len(w) + 1 for w in body) < size:
        body.append(rng.choice(words))
    body.insert(len(body) // 2, phrase)
    return " ".join(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument("--isolated", action="store_true", help="Start a worker of its own in a scratch folder.")
    parser.add_argument("--timeout", type=float, default=60.0, help="Give up on one document after this long.")
    args = parser.parse_args()

    env = django_setup(isolated=args.isolated)
    from chat.retrieval import retrieve
    from config.celery_app import app
    from ingestion.search_index import AccessFilter
    from ingestion.services import document_ingest, source_get_or_create
    stack = worker(env) if args.isolated else contextlib.nullcontext()
    with stack:
        if not args.isolated and not app.control.ping(timeout=1.0):
            raise SystemExit("No Celery worker answers: start `make run` first, or pass --isolated.")
        source = source_get_or_create(name="benchmark-freshness")
        rng = random.Random(7)
        run = "".join(rng.choices(string.ascii_lowercase, k=6)) + str(int(time.time()))
        latencies: list[float] = []
        # Document -1 warms the stack up (a just-started worker loads its model) and is not counted.
        for i in range(-1, args.documents):
            phrase = f"zq{run}x{i}"  # one token no other document has
            content = document_text(rng, phrase).encode()
            started = time.perf_counter()
            document = document_ingest(source=source, external_id=f"{run}-{i}", content=content).document
            while True:
                hits = retrieve(phrase, access=AccessFilter.staff(), k=1, mode="bm25")
                if hits and hits[0].document_id == document.pk:
                    if i >= 0:
                        latencies.append(time.perf_counter() - started)
                    break
                if time.perf_counter() - started > args.timeout * (3 if i < 0 else 1):
                    raise SystemExit(f"Document {i} was not searchable after {args.timeout}s")
                time.sleep(0.01)
    print(f"freshness over {len(latencies)} documents of ~5 KB, one at a time")
    print(f"  p50 {percentile(latencies, 50) * 1000:.0f} ms   p95 {percentile(latencies, 95) * 1000:.0f} ms   "
          f"max {max(latencies) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
