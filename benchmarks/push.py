"""Push intake and sinks, measured against the real ASGI server (daphne, as `make run` runs it)
and a real Celery worker, in a scratch folder of its own:

- freshness: a CloudEvent accepted by POST /api/events/ -> its text found by search, p50/p95
  over 50 events of ~5 KB, one at a time;
- intake throughput: events accepted per second, 8 clients, one event per request and then
  batches of 100 (delete events of documents that do not exist, so that what is measured is the
  intake and not the embedding of thousands of documents competing for the same 2 cores);
- sink delivery: event recorded -> delivered to a local HTTP receiver, p50/p95 over 50 events.

    .venv/bin/python benchmarks/push.py [--events 50] [--singles 800] [--batches 50]
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from _stack import ROOT, django_setup, percentile, worker
from freshness import document_text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def daphne(env: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health/", timeout=2)  # any answer: it serves
            return process
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("daphne did not start.")


def server_cpu(pid: int) -> float:
    """Seconds of CPU the process has used (user + system), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event(type: str, data: dict, **attributes) -> dict:
    return {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/bench", "type": type, "data": data,
            **attributes}


def report(name: str, values: list[float]) -> None:
    print(f"{name}: p50 {percentile(values, 50) * 1000:.0f} ms   p95 {percentile(values, 95) * 1000:.0f} ms   "
          f"max {max(values) * 1000:.0f} ms   (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50, help="Events for freshness and for sink delivery.")
    parser.add_argument("--singles", type=int, default=800, help="Events sent one per request (8 clients).")
    parser.add_argument("--batches", type=int, default=50, help="Batches of 100 events (8 clients).")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    env = django_setup(isolated=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from chat.retrieval import retrieve
    from events.services import event_publish
    from events.sinks.services import sink_create
    from ingestion.connectors import config_clean
    from ingestion.models import Source
    from ingestion.search_index import AccessFilter

    source = Source.objects.create(name="benchmark-push", kind="push", config=config_clean("push", {}))
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/events/"
    headers = {"Authorization": f"Bearer {source.config['secret']}"}
    server = daphne(env, port)
    try:
        with worker(env):
            rng = random.Random(7)
            run = "".join(rng.choices(string.ascii_lowercase, k=6))
            latencies: list[float] = []
            with httpx.Client(headers=headers, timeout=120) as client:
                for i in range(-1, args.events):  # event -1 warms the stack up, not counted
                    phrase = f"zq{run}x{i}"
                    body = json.dumps(event("freshet.document.upsert", {
                        "external_id": f"{run}-{i}", "title": f"Note {i}", "content": document_text(rng, phrase)}))
                    started = time.perf_counter()
                    response = client.post(url, content=body, headers={"Content-Type": "application/cloudevents+json"})
                    assert response.status_code == 202, response.text
                    while not retrieve(phrase, access=AccessFilter.staff(), k=1, mode="bm25"):
                        # The first waits for the worker's processes to load the model.
                        if time.perf_counter() - started > args.timeout * (5 if i < 0 else 1):
                            raise SystemExit(f"Event {i} was not searchable in time")
                        time.sleep(0.01)
                    if i >= 0:
                        latencies.append(time.perf_counter() - started)
            report(f"push freshness (accepted -> found by search, {args.events} events of ~5 KB)", latencies)

            def send(bodies: list[tuple[str, bytes]]) -> None:
                with httpx.Client(headers=headers, timeout=120) as client:
                    for content_type, body in bodies:
                        response = client.post(url, content=body, headers={"Content-Type": content_type})
                        assert response.status_code == 202, response.text

            def throughput(name: str, requests: list[tuple[str, bytes]], per_request: int) -> None:
                shares = [requests[n::8] for n in range(8)]
                cpu = server_cpu(server.pid)
                started = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(send, shares))
                elapsed = time.perf_counter() - started
                cpu = server_cpu(server.pid) - cpu
                events = len(requests) * per_request
                print(f"intake {name}: {events} events in {elapsed:.2f} s = {events / elapsed:.0f} events/s "
                      f"({len(requests) / elapsed:.0f} requests/s); server CPU {cpu / len(requests) * 1000:.1f} ms "
                      f"a request")

            def delete(n: int) -> dict:
                return event("freshet.document.delete", {"external_id": f"absent-{n}"})

            singles = [("application/cloudevents+json", json.dumps(delete(n)).encode()) for n in range(args.singles)]
            throughput("one event per request, 8 clients", singles, 1)
            batches = [("application/cloudevents-batch+json",
                        json.dumps([delete(b * 100 + n) for n in range(100)]).encode()) for b in range(args.batches)]
            throughput("batches of 100, 8 clients", batches, 100)

            arrived: dict[str, float] = {}

            class Receiver(http.server.BaseHTTPRequestHandler):
                def do_POST(self):  # noqa: N802
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    arrived.setdefault(self.headers["webhook-id"], time.perf_counter())
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *a):
                    pass

            receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
            threading.Thread(target=receiver.serve_forever, daemon=True).start()
            sink_create(name="benchmark", url=f"http://127.0.0.1:{receiver.server_address[1]}/",
                        types=["freshet.bench.sink"])
            time.sleep(2)  # let the intake's documents settle
            delays: list[float] = []
            for i in range(-1, args.events):
                started = time.perf_counter()
                recorded = event_publish(type="freshet.bench.sink", data={"n": i})
                while recorded.pk not in arrived:
                    if time.perf_counter() - started > args.timeout:
                        raise SystemExit(f"Sink event {i} was not delivered after {args.timeout}s")
                    time.sleep(0.005)
                if i >= 0:
                    delays.append(arrived[recorded.pk] - started)
            report(f"sink delivery (recorded -> at the receiver, {args.events} events)", delays)
            receiver.shutdown()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
