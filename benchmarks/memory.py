"""Resident memory of a worker process and of a web process, per encoder backend, side by side.

For each backend (EMBEDDING_BACKEND), in one scratch stack: a Celery worker (one pool process, as
`make run` starts, every queue) indexes documents pushed through the real pipeline, and daphne
(the web process, its embedding model warmed up at start) answers searches over HTTP; then the
resident set (VmRSS) and its peak (VmHWM) of the worker's pool process, the worker's main
process and daphne are read from /proc.

    .venv/bin/python benchmarks/memory.py [--backends torch,auto] [--docs 40]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import time

import httpx
from _stack import django_setup, worker
from freshness import document_text
from push import daphne as daphne_start
from push import free_port


def status_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(child) for child in open(path).read().split()] if os.path.exists(path) else []


@contextlib.contextmanager
def daphne(env: dict[str, str], port: int):
    """push.py's daphne (started, answering), stopped after the block."""
    process = daphne_start(env, port)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="torch,auto")
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--searches", type=int, default=30)
    args = parser.parse_args()

    env = django_setup(isolated=True)
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from ingestion.models import Document, Source
    from ingestion.services import document_ingest

    user = get_user_model().objects.create_user("memory-benchmark", is_staff=True, is_superuser=True)
    token = Token.objects.create(user=user).key
    rng = random.Random(17)
    rows = []
    for backend in args.backends.split(","):
        run_env = {**env, "EMBEDDING_BACKEND": backend, "THROTTLE_SEARCH": "100000/min"}
        source = Source.objects.create(name=f"memory-{backend}", kind="upload")
        port = free_port()
        with worker(run_env, concurrency=1) as celery, daphne(run_env, port) as web:
            for n in range(args.docs):
                document_ingest(source=source, external_id=f"{backend}-{n}", title=f"Note {n}",
                                content=document_text(rng, f"zq{backend}{n}").encode(), filename=f"{n}.txt",
                                user=user)
            deadline = time.monotonic() + 600
            while Document.objects.filter(source=source, status="indexed").count() < args.docs:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{backend}: the documents were not indexed in time")
                time.sleep(0.5)
            with httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=60) as client:
                for n in range(args.searches):
                    response = client.get(f"http://127.0.0.1:{port}/api/search/",
                                          params={"q": f"note zq{backend}{n % args.docs} fjord", "k": 5})
                    assert response.status_code == 200, response.text
            pool = children(celery.pid)
            def memory(pids: list[int]) -> tuple[int, int]:
                return sum(status_kib(p, "VmRSS") for p in pids), sum(status_kib(p, "VmHWM") for p in pids)

            row = {"backend": backend, "web": memory([web.pid]), "worker main": memory([celery.pid]),
                   "worker pool": memory(pool)}
            rows.append(row)
            print(f"{backend}: " + ", ".join(f"{name} {row[name][0] / 1024:.0f} MiB (peak {row[name][1] / 1024:.0f})"
                                             for name in ("web", "worker pool", "worker main")), flush=True)
    print("\n| backend | web process | worker pool process | worker main process |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        cells = [f"{rss / 1024:.0f} MiB (peak {peak / 1024:.0f})"
                 for rss, peak in (row["web"], row["worker pool"], row["worker main"])]
        print(f"| {row['backend']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
