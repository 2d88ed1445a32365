"""Vote acknowledgement: how long a vote takes to be acknowledged over the chat websocket
(`{"type": "feedback"}` to `feedback_ack`, ws/chat/ under daphne) and over `POST /api/feedback/`,
p50/p95 over N votes each, after one warm-up vote on each path that is not counted.

An isolated stack in a scratch folder (its own SQLite database, LanceDB index and Redis key
prefix) with a Celery worker on every queue, as `make run` runs: each vote publishes
`freshet.feedback.received`, and the worker tallies it meanwhile, as it would in use. The votes
go to stored answers that cite one passage each (made directly in the database, no retrieval),
one signed-in user; thumbs up and down alternate, every other thumbs-down with a comment. The
clock runs on the client, from sending the vote to reading its acknowledgement.

    .venv/bin/python benchmarks/votes.py [--votes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from _stack import django_setup, percentile, worker
from chat_latency import free_port, session_for_benchmark_user, start_daphne


def answers_to_vote_on(count: int) -> list[tuple[int, str]]:
    """`count` stored answers of the benchmark user, each citing one passage: (message id, chunk id)."""
    from django.contrib.auth.models import User

    from chat.models import Citation, Conversation, Message
    from ingestion.models import Document, Source

    user = User.objects.get(username="chat-benchmark")
    source = Source.objects.create(name="votes-benchmark", kind=Source.Kind.UPLOAD, public=True)
    document = Document.objects.create(source=source, external_id="notes.txt", title="Notes",
                                       status=Document.Status.INDEXED)
    conversation = Conversation.objects.create(user=user, title="Votes")
    pairs = []
    for n in range(count):
        chunk_id = f"{document.pk}-{n}"
        message = Message.objects.create(
            conversation=conversation, question=f"Question {n}?", answer="An answer [1].",
            retrieved=[{"chunk_id": chunk_id, "document_id": document.pk, "score": 1.0, "n": 1}])
        Citation.objects.create(message=message, n=1, chunk_id=chunk_id, document_id=document.pk, text="passage")
        pairs.append((message.pk, chunk_id))
    return pairs


def vote_bodies(targets: list[tuple[int, str]]) -> list[dict]:
    bodies = []
    for n, (message_id, chunk_id) in enumerate(targets):
        body = {"message_id": message_id, "rating": 1 if n % 2 else -1}
        if n % 4 == 0:
            body["comment"] = "Not what the report says."
        if n % 3 == 0:
            body["chunk_id"] = chunk_id
        bodies.append(body)
    return bodies


async def socket_votes(ws_url: str, session: str, origin: str, bodies: list[dict]) -> list[float]:
    import websockets

    times = []
    async with websockets.connect(ws_url, additional_headers={"Cookie": f"sessionid={session}"}, origin=origin,
                                  open_timeout=60) as connection:
        for body in bodies:
            started = time.perf_counter()
            await connection.send(json.dumps({"type": "feedback", **body}))
            reply = json.loads(await asyncio.wait_for(connection.recv(), timeout=60))
            times.append((time.perf_counter() - started) * 1000)
            if reply["type"] != "feedback_ack":
                raise SystemExit(f"The socket refused a vote: {reply}")
    return times


def rest_votes(url: str, token: str, bodies: list[dict]) -> list[float]:
    import httpx

    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60) as client:
        for body in bodies:
            started = time.perf_counter()
            response = client.post("/api/feedback/", json=body)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code not in (200, 201):
                raise SystemExit(f"POST /api/feedback/ refused a vote: HTTP {response.status_code} {response.text}")
    return times


def row(name: str, values: list[float]) -> str:
    return (f"  {name:<28} p50 {percentile(values, 50):6.1f}   p95 {percentile(values, 95):6.1f}   "
            f"max {max(values, default=0):6.1f} ms   ({len(values)} votes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=60, help="Votes timed on each path (at least 50).")
    args = parser.parse_args()
    if args.votes < 50:
        raise SystemExit("--votes: at least 50, so that p95 means something.")

    env = django_setup(isolated=True)
    env["THROTTLE_FEEDBACK"] = "100000/min"  # the benchmark votes faster than a person
    from django.conf import settings
    from rest_framework.authtoken.models import Token

    session = session_for_benchmark_user()
    targets = answers_to_vote_on(2 * (args.votes + 1))
    bodies = vote_bodies(targets)
    socket_bodies, rest_bodies = bodies[: args.votes + 1], bodies[args.votes + 1:]
    from django.contrib.auth.models import User

    token, _ = Token.objects.get_or_create(user=User.objects.get(username="chat-benchmark"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with worker(env, log=Path(settings.VAR_DIR) / "votes-worker.log"):
        process = start_daphne(port, env, Path(settings.VAR_DIR) / "votes-daphne.log")
        try:
            socket_times = asyncio.run(socket_votes(url.replace("http://", "ws://") + "/ws/chat/", session, url,
                                                    socket_bodies))[1:]
            rest_times = rest_votes(url, token.key, rest_bodies)[1:]
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"Vote acknowledgement, client clock, after one warm-up vote each (stack in {settings.VAR_DIR}):")
    print(row("websocket feedback_ack", socket_times))
    print(row("POST /api/feedback/", rest_times))
    print(f"  ratio p95 websocket / REST: {percentile(socket_times, 95) / percentile(rest_times, 95):.2f}")


if __name__ == "__main__":
    main()
