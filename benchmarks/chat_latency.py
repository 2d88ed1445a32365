"""Chat latency: time to the first token and to the full answer over the chat websocket, p50/p95
over 50 SciFact questions, one at a time, extractive answers (no LLM_BASE_URL).

Each question goes out on a real websocket (`ws/chat/` under daphne) as a signed-in user; the
clock runs from sending the question to the first `token` message and to the `answer` message.
The server's own figures (Message.first_token_ms, total_ms) are printed beside them. Three
warm-up questions load the embedding model first and are not counted.

    # the environment's stack (make run defaults), with SciFact loaded by the evaluation command:
    .venv/bin/python manage.py evaluate --dataset /work/shared/datasets/scifact
    .venv/bin/python benchmarks/chat_latency.py

    # or an isolated stack in a scratch folder: its own worker indexes N SciFact abstracts (the
    # documents judged relevant to the questions first) through the real pipeline
    .venv/bin/python benchmarks/chat_latency.py --isolated --docs 1000

    # or a running server
    .venv/bin/python benchmarks/chat_latency.py --url http://127.0.0.1:8000 --username U --password P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _stack import ROOT, django_setup, percentile, worker

USER = "chat-benchmark"
PASSWORD = "chat-benchmark-password"  # a throwaway local user of the benchmark's own stack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daphne(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env={**os.environ, **env, "LLM_BASE_URL": ""}, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"daphne did not start; see {log}") from None
            time.sleep(0.2)


def session_for_benchmark_user() -> str:
    """A session key for the benchmark user (made directly in this stack's database)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    user, created = User.objects.get_or_create(username=USER)
    if created:
        user.set_password(PASSWORD)
        user.save()
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def session_by_login(url: str, username: str, password: str) -> str:
    import httpx

    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if page.status_code != 200 or token is None:
            raise SystemExit(f"No login form at {url}/accounts/login/ (HTTP {page.status_code}).")
        response = client.post("/accounts/login/", data={"username": username, "password": password,
                                                          "csrfmiddlewaretoken": token.group(1)},
                               headers={"Referer": f"{url}/accounts/login/"})
        session = client.cookies.get("sessionid")
        if response.status_code != 302 or not session:
            raise SystemExit("Login failed: check --username and --password.")
        return session


def build_isolated_index(dataset_dir: Path, questions: dict[str, str], docs: int, env: dict[str, str]) -> None:
    """Index `docs` SciFact abstracts (the questions' judged documents first) with a real worker."""
    from chat.evaluation import beir_load, corpus_ingest, documents_wait
    from ingestion.models import Source

    dataset = beir_load(dataset_dir, split="test")
    wanted = {doc for qid in questions for doc in dataset.qrels.get(qid, {})}
    ordered = ([d for d in dataset.corpus if d.id in wanted] + [d for d in dataset.corpus if d.id not in wanted])
    dataset.corpus = ordered[:docs]
    source, _ = Source.objects.get_or_create(name=f"eval:{dataset.name}", defaults={"public": True})
    with worker(env):
        started = time.perf_counter()
        summary = corpus_ingest(dataset=dataset, source=source)
        documents_wait(source=source, document_pks=list(summary.documents.values()), timeout=3600,
                       on_progress=lambda done: print(f"\r  indexed {done}/{len(summary.documents)}", end="",
                                                      flush=True))
        print(f"\n  indexed {len(summary.documents)} documents in {time.perf_counter() - started:.0f} s")


async def ask_all(ws_url: str, session: str, origin: str, questions: list[str], warmup: int) -> list[dict]:
    import websockets

    results = []
    async with websockets.connect(ws_url, additional_headers={"Cookie": f"sessionid={session}"}, origin=origin,
                                  max_size=2**22, open_timeout=60) as connection:
        for index, question in enumerate(questions):
            started = time.perf_counter()
            await connection.send(json.dumps({"type": "question", "text": question, "conversation": None}))
            first = None
            tokens = 0
            while True:
                message = json.loads(await asyncio.wait_for(connection.recv(), timeout=120))
                if message["type"] == "token":
                    tokens += 1
                    if first is None:
                        first = (time.perf_counter() - started) * 1000
                elif message["type"] == "answer":
                    total = (time.perf_counter() - started) * 1000
                    break
                elif message["type"] == "error":
                    raise SystemExit(f"The server refused question {index}: {message['detail']}")
            if index >= warmup:
                results.append({"first_ms": first, "total_ms": total, "tokens": tokens,
                                "citations": len(message["citations"]),
                                "server_first_ms": message["first_token_ms"], "server_total_ms": message["total_ms"],
                                "retrieval_ms": message["retrieval_ms"]})
    return results


def row(name: str, values: list[float]) -> str:
    return (f"  {name:<26} p50 {percentile(values, 50):7.1f}   p95 {percentile(values, 95):7.1f}   "
            f"max {max(values, default=0):7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A running Freshet, e.g. http://127.0.0.1:8000 (default: start daphne here).")
    parser.add_argument("--username", help="For --url: a user to sign in as.")
    parser.add_argument("--password", help="For --url.")
    parser.add_argument("--isolated", action="store_true", help="Build a small index in a scratch folder first.")
    parser.add_argument("--docs", type=int, default=1000, help="With --isolated: SciFact abstracts to index.")
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/datasets/scifact"))
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    rows = [json.loads(line) for line in (args.dataset / "queries.jsonl").read_text().splitlines() if line.strip()]
    judged = {line.split("\t")[0] for line in (args.dataset / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    chosen = {r["_id"]: r["text"] for r in rows if r["_id"] in judged}
    chosen = dict(list(chosen.items())[: args.questions])
    questions = list(chosen.values())
    questions = questions[: args.warmup] + questions  # the warm-up repeats the first few

    process = None
    if args.url:
        if not (args.username and args.password):
            raise SystemExit("--url needs --username and --password.")
        url = args.url.rstrip("/")
        session = session_by_login(url, args.username, args.password)
    else:
        env = django_setup(isolated=args.isolated)
        if args.isolated:
            build_isolated_index(args.dataset, chosen, args.docs, env)
        else:
            from ingestion.models import Source

            if not Source.objects.filter(name=f"eval:{args.dataset.name}", documents__isnull=False).exists():
                raise SystemExit(f"No source eval:{args.dataset.name} here: load it with `manage.py evaluate "
                                 f"--dataset {args.dataset}`, or pass --isolated.")
        session = session_for_benchmark_user()
        port = free_port()
        from django.conf import settings

        process = start_daphne(port, env, Path(settings.VAR_DIR) / "chat-latency-daphne.log")
        url = f"http://127.0.0.1:{port}"

    ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/ws/chat/"
    try:
        results = asyncio.run(ask_all(ws_url, session, url, questions, args.warmup))
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    print(f"Chat over {ws_url}: {len(results)} SciFact test questions, one at a time, extractive answers "
          f"(after {args.warmup} warm-up questions)")
    print(row("first token, client ms", [r["first_ms"] for r in results]))
    print(row("full answer, client ms", [r["total_ms"] for r in results]))
    print(row("first token, server ms", [r["server_first_ms"] for r in results]))
    print(row("full answer, server ms", [r["server_total_ms"] for r in results]))
    print(row("retrieval, server ms", [r["retrieval_ms"] for r in results]))
    print(f"  tokens per answer: median {percentile([r['tokens'] for r in results], 50):.0f}; "
          f"answers with citations: {sum(r['citations'] > 0 for r in results)}/{len(results)}")


if __name__ == "__main__":
    main()
