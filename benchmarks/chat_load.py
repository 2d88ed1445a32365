"""Chat under load: N concurrent websocket chat connections (default 50) asking SciFact test
questions back to back for D seconds (default 60) while documents are being ingested; prints the
errors, answers/s and the latency percentiles. Extractive answers (no LLM_BASE_URL).

Each connection is a real websocket (`ws/chat/` under daphne) with its own signed-in session; it
sends a question, waits for the `answer`, and sends the next. Anything but an answer (an `error`
message, a dropped connection, no answer within --answer-timeout) counts as an error. Meanwhile
a thread ingests more SciFact abstracts (--ingest-rate per second) into another source through
the real pipeline (its own Celery worker), so the index is written while it is searched.

    # an isolated stack in a scratch folder: its worker indexes --docs SciFact abstracts first
    .venv/bin/python benchmarks/chat_load.py --isolated --docs 1000

    # the environment's stack (make run defaults), SciFact loaded by the evaluation command:
    .venv/bin/python manage.py evaluate --dataset /work/shared/datasets/scifact
    .venv/bin/python benchmarks/chat_load.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

from _stack import django_setup, percentile, worker
from chat_latency import build_isolated_index, free_port, session_for_benchmark_user, start_daphne


def ingest_steadily(dataset_dir: Path, *, skip: int, rate: float, stop: threading.Event, counts: dict) -> None:
    """Ingest SciFact abstracts after the first `skip` into `load:scifact`, `rate` per second."""
    from django.db import close_old_connections

    from chat.evaluation import beir_load
    from ingestion.models import Source
    from ingestion.services import document_ingest

    try:
        corpus = beir_load(dataset_dir, split="test").corpus[skip:]
        source, _ = Source.objects.get_or_create(name="load:scifact", defaults={"public": True})
        started = time.monotonic()
        for n, doc in enumerate(corpus):
            if stop.is_set():
                break
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            result = document_ingest(source=source, external_id=doc.id, title=doc.title, filename=f"{doc.id}.txt",
                                     content=doc.text.encode())
            counts["ingested"] += 1
            counts["ids"].append(result.document.pk)
    finally:
        close_old_connections()


async def one_connection(ws_url: str, origin: str, session: str, questions: list[str], offset: int,
                         deadline: float, timeout: float, results: dict) -> None:
    import websockets

    try:
        async with websockets.connect(ws_url, additional_headers={"Cookie": f"sessionid={session}"}, origin=origin,
                                      max_size=2**22, open_timeout=60) as connection:
            n = offset
            while time.monotonic() < deadline:
                question = questions[n % len(questions)]
                n += 1
                sent = time.perf_counter()
                await connection.send(json.dumps({"type": "question", "text": question, "conversation": None}))
                first = None
                while True:
                    message = json.loads(await asyncio.wait_for(connection.recv(), timeout=timeout))
                    if message["type"] == "token" and first is None:
                        first = (time.perf_counter() - sent) * 1000
                    elif message["type"] == "answer":
                        results["answers"].append({"total_ms": (time.perf_counter() - sent) * 1000,
                                                   "first_ms": first, "retrieval_ms": message.get("retrieval_ms"),
                                                   "citations": len(message.get("citations") or [])})
                        break
                    elif message["type"] == "error":
                        results["errors"].append(f"error {message.get('status')}: {message.get('detail')}")
                        break
    except Exception as error:  # a refused or dropped connection, or an answer that never came
        results["errors"].append(f"{type(error).__name__}: {error}")


async def load(ws_url: str, origin: str, sessions: list[str], questions: list[str], seconds: float,
               timeout: float) -> tuple[dict, float]:
    results: dict = {"answers": [], "errors": []}
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(one_connection(ws_url, origin, session, questions, i * 7, deadline, timeout, results)
                           for i, session in enumerate(sessions)))
    return results, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isolated", action="store_true", help="Build a small index in a scratch folder first.")
    parser.add_argument("--docs", type=int, default=1000, help="With --isolated: SciFact abstracts indexed first.")
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/datasets/scifact"))
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ingest-rate", type=float, default=2.0, help="Documents ingested per second meanwhile.")
    parser.add_argument("--answer-timeout", type=float, default=120.0)
    args = parser.parse_args()

    rows = [json.loads(line) for line in (args.dataset / "queries.jsonl").read_text().splitlines() if line.strip()]
    judged = {line.split("\t")[0] for line in (args.dataset / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    chosen = {r["_id"]: r["text"] for r in rows if r["_id"] in judged}
    questions = list(chosen.values())

    env = django_setup(isolated=args.isolated)
    from django.conf import settings

    from ingestion.models import Document, Source

    if args.isolated:
        build_isolated_index(args.dataset, chosen, args.docs, env)
    elif not Source.objects.filter(name=f"eval:{args.dataset.name}", documents__isnull=False).exists():
        raise SystemExit(f"No source eval:{args.dataset.name} here: load it with `manage.py evaluate --dataset "
                         f"{args.dataset}`, or pass --isolated.")
    indexed_before = Document.objects.filter(source__name=f"eval:{args.dataset.name}").count()
    sessions = [session_for_benchmark_user() for _ in range(args.connections)]
    port = free_port()
    daphne = start_daphne(port, env, Path(settings.VAR_DIR) / "chat-load-daphne.log")
    url = f"http://127.0.0.1:{port}"
    ws_url = f"ws://127.0.0.1:{port}/ws/chat/"
    counts: dict = {"ingested": 0, "ids": []}
    stop = threading.Event()
    try:
        # Warm up: the model loads in daphne on its first question; not counted.
        asyncio.run(load(ws_url, url, sessions[:1], questions[:3], 0.1, args.answer_timeout))
        with worker(env):
            feeder = threading.Thread(target=ingest_steadily, args=(args.dataset,),
                                      kwargs={"skip": args.docs if args.isolated else indexed_before,
                                              "rate": args.ingest_rate, "stop": stop, "counts": counts}, daemon=True)
            feeder.start()
            results, elapsed = asyncio.run(load(ws_url, url, sessions, questions, args.seconds, args.answer_timeout))
            stop.set()
            feeder.join(timeout=30)
            indexed = Document.objects.filter(pk__in=counts["ids"], status=Document.Status.INDEXED).count()
    finally:
        stop.set()
        os.killpg(daphne.pid, signal.SIGTERM)
        daphne.wait(timeout=30)

    answers = results["answers"]
    totals = [a["total_ms"] for a in answers]
    firsts = [a["first_ms"] for a in answers if a["first_ms"] is not None]
    retrievals = [a["retrieval_ms"] for a in answers if a["retrieval_ms"] is not None]
    print(f"Chat load over {ws_url}: {args.connections} concurrent connections for {elapsed:.0f} s, extractive "
          f"answers, index of {indexed_before if not args.isolated else args.docs} SciFact abstracts; "
          f"meanwhile {counts['ingested']} more documents ingested ({indexed} of them indexed by the end)")
    print(f"  answers: {len(answers)} ({len(answers) / elapsed:.1f}/s); errors: {len(results['errors'])}")
    for name, values in (("full answer, client ms", totals), ("first token, client ms", firsts),
                         ("retrieval, server ms", retrievals)):
        print(f"  {name:<24} p50 {percentile(values, 50):8.1f}   p95 {percentile(values, 95):8.1f}   "
              f"max {max(values, default=0):8.1f}")
    print(f"  answers with citations: {sum(a['citations'] > 0 for a in answers)}/{len(answers)}")
    for error in sorted(set(results["errors"]))[:10]:
        print(f"  error: {error} (x{results['errors'].count(error)})")


if __name__ == "__main__":
    main()
