"""Search latency: p50/p95 of GET /api/search/ over HTTP, 8 concurrent clients, SciFact queries.

Each client keeps one HTTP/1.1 connection open and sends the next query as soon as the last one
answered (closed loop, no think time), cycling through the split's queries; the figures are
client-side wall-clock times per request, with the server's own `took_ms` beside them.

Needs the SciFact index: load it once with `manage.py evaluate` (which also needs a worker):

    .venv/bin/python manage.py evaluate --dataset /work/shared/datasets/scifact
    .venv/bin/python benchmarks/search_latency.py              # starts daphne itself, same environment

By default it starts daphne (one process, as `make run` does) on a free loopback port with the
environment's settings, the search throttle lifted, and a staff user `search-benchmark` with a
token; results are narrowed to the evaluation source `eval:<dataset folder>`. Against a running
server instead:

    .venv/bin/python benchmarks/search_latency.py --url http://127.0.0.1:8000 --token KEY [--source ID]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from _stack import ROOT, django_setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def queries_of(dataset: Path, split: str) -> list[str]:
    judged = {line.split("\t")[0] for line in (dataset / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]}
    rows = [json.loads(line) for line in (dataset / "queries.jsonl").read_text().splitlines() if line.strip()]
    return [row["text"] for row in rows if row["_id"] in judged]


def prepare_local(dataset: Path, source_id: int | None = None) -> tuple[str, int]:
    """A token for a staff benchmark user, and the id of the source to search (`source_id`, or
    the evaluation source of `dataset`)."""
    django_setup(isolated=False)
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from ingestion.models import Source

    sources = Source.objects.filter(pk=source_id) if source_id else Source.objects.filter(name=f"eval:{dataset.name}")
    source = sources.first()
    if source is None or not source.documents.exists():
        raise SystemExit(f"No source {source_id or 'eval:' + dataset.name} with documents here: load it first with "
                         f"`manage.py evaluate --dataset {dataset}` (same environment).")
    user, _ = User.objects.get_or_create(username="search-benchmark", defaults={"is_staff": True})
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    token, _ = Token.objects.get_or_create(user=user)
    return token.key, source.pk


SERVERS = {
    # Each as it would serve the platform: access log on (to the log file here).
    "daphne": lambda port: ["daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
    # uvloop and httptools where installed (`pip install uvicorn[standard]`), else asyncio and h11.
    "uvicorn": lambda port: ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "--loop", "auto",
                             "--http", "auto", "config.asgi:application"],
}


def start_server(server: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "THROTTLE_SEARCH": "1000000/min", "DJANGO_SETTINGS_MODULE": "config.settings"}
    handle = open(log, "w")
    command = SERVERS[server](port)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / command[0]), *command[1:]],
        cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{server} did not start; see {log}") from None
            time.sleep(0.2)


class Client(threading.Thread):
    def __init__(self, base: urllib.parse.SplitResult, token: str, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.paths = base, token, paths
        self.latencies: list[float] = []
        self.server_ms: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.base.hostname, self.base.port or 80, timeout=60)
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        for path in self.paths:
            started = time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                connection.close()
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                self.errors.append(f"HTTP {response.status}: {body[:200]!r}")
                continue
            self.latencies.append(elapsed)
            self.server_ms.append(json.loads(body)["took_ms"])
        connection.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    from chat.evaluation import percentile

    return percentile(values, q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A running Freshet (default: start --server here).")
    parser.add_argument("--server", default="daphne", choices=sorted(SERVERS),
                        help="The ASGI server to start (default daphne, as `make run`).")
    parser.add_argument("--token", help="API token for --url.")
    parser.add_argument("--source", type=int, help="Narrow searches to this source id (default: the eval source).")
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/datasets/scifact"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=800, help="Requests in all, after the warm-up.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "bm25", "knn"])
    args = parser.parse_args()

    queries = queries_of(args.dataset, args.split)
    process = None
    if args.url:
        if not args.token:
            raise SystemExit("--url needs --token.")
        url, token, source = args.url, args.token, args.source
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        sys.path.insert(0, str(ROOT))
    else:
        token, source = prepare_local(args.dataset, args.source)
        port = free_port()
        log = Path(os.environ.get("FRESHET_VAR_DIR", ROOT / "var")) / f"search-latency-{args.server}.log"
        process = start_server(args.server, port, log)
        url = f"http://127.0.0.1:{port}"
    base = urllib.parse.urlsplit(url)

    def path(query: str) -> str:
        params = {"q": query, "k": args.k, "mode": args.mode}
        if source:
            params["source"] = source
        return "/api/search/?" + urllib.parse.urlencode(params)

    try:
        warm = Client(base, token, [path(q) for q in queries[:20]])  # model load, first index reads
        warm.run()
        if warm.errors:
            raise SystemExit(f"Warm-up failed: {warm.errors[0]}")
        paths = [path(queries[i % len(queries)]) for i in range(args.requests)]
        clients = [Client(base, token, paths[i::args.clients]) for i in range(args.clients)]
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(process.pid) if process else 0.0
        started = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        wall = time.perf_counter() - started
        server_cpu = cpu_seconds(process.pid) - cpu_before if process else None
        load_after = os.getloadavg()[0]
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    latencies = [v for c in clients for v in c.latencies]
    server = [v for c in clients for v in c.server_ms]
    errors = [e for c in clients for e in c.errors]
    print(f"GET /api/search/ mode={args.mode} k={args.k}, {args.clients} concurrent clients, "
          f"{len(latencies)} requests ({len(set(paths))} distinct queries), {len(errors)} errors, {url}")
    print(f"  latency ms  p50 {pct(latencies, 50):7.1f}   p95 {pct(latencies, 95):7.1f}   "
          f"p99 {pct(latencies, 99):7.1f}   max {max(latencies, default=0):7.1f}")
    print(f"  took_ms     p50 {pct(server, 50):7.1f}   p95 {pct(server, 95):7.1f}   (server side, search only)")
    print(f"  throughput  {len(latencies) / wall:.1f} requests/s")
    if server_cpu is not None and latencies:
        # Load-independent cost: what the server process burned per answer (all its threads).
        print(f"  server CPU  {server_cpu / len(latencies) * 1000:.1f} ms per request")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"  machine load average (1 min) {load_before:.2f} before, {load_after:.2f} after, "
          f"{os.cpu_count()} CPUs; OMP_NUM_THREADS={threads}")
    if errors:
        print(f"  first error: {errors[0]}")


if __name__ == "__main__":
    main()
