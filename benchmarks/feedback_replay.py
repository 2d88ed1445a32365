"""Feedback replay: does feedback make retrieval better, and how soon is a vote visible?

On a BEIR dataset (SciFact by default) indexed through the real pipeline in an isolated stack:

1. nDCG@10 of the train queries (seen) and the test queries (unseen) before any feedback;
2. every train query is asked as a simulated user (one account per query) through the chat's
   own answer path, with the answer showing the top 10 passages; the user votes each passage up
   when its document is judged relevant (qrels/train.tsv) and down otherwise, through
   `feedback_record`, as the chat socket does. The feedback consumer runs in the stack's real
   Celery worker and writes the scores into the search index;
3. nDCG@10 of both splits again, through `chat.retrieval.retrieve`, as users get it;
4. the time from a vote (`feedback_record` returning) to the chunk's new score being readable
   from the search index, one vote at a time.

The first run indexes the corpus (several minutes on two cores); keep the folder with
`--var-dir DIR` and later runs reuse it (feedback from an earlier run is cleared first):

    .venv/bin/python benchmarks/feedback_replay.py --var-dir /tmp/freshet-feedback-replay
    .venv/bin/python benchmarks/feedback_replay.py --var-dir /tmp/freshet-feedback-replay --index-only

`--tune` instead searches the boost's settings on the train split alone (votes from one half of
the train queries, gains measured on that half, harm on the other half) by re-ranking the same
fused candidate lists with `chat.retrieval.apply_feedback`: first the score alone (smoothing
prior, thumbs-down weight, boost weight), then with the question profiles
(SEARCH_FEEDBACK_CONTEXT_*).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from _stack import django_setup, percentile, worker

DATASET = Path("/work/shared/datasets/scifact")
SOURCE_NAME = "feedback-replay"
CHUNK_SIZE, CHUNK_OVERLAP = 254, 32  # the evaluation profile of `manage.py evaluate`
SHOWN = 10  # passages the simulated user sees and judges


def stack_setup(var_dir: str | None) -> dict[str, str]:
    """Django configured on an isolated stack: a scratch folder, or `var_dir` kept between runs."""
    if var_dir is None:
        return django_setup(isolated=True)
    Path(var_dir).mkdir(parents=True, exist_ok=True)
    env = {"FRESHET_VAR_DIR": str(Path(var_dir).resolve()), "FRESHET_KEY_PREFIX": f"freshet-bench-{os.getpid()}:",
           "ELASTICSEARCH_URL": "", "DATABASE_URL": ""}
    for name in ("ELASTICSEARCH_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
        env.pop(name)
    os.environ.update(env)
    env.update(django_setup(isolated=False))
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def corpus_index(dataset, *, timeout: float):
    """The dataset's corpus in its own public source, indexed (waits for the worker)."""
    from chat.evaluation import corpus_ingest, documents_pending, documents_wait
    from ingestion.models import Document, Source
    from ingestion.search_index import search_index
    from ingestion.services import document_reindex

    source, _ = Source.objects.get_or_create(
        name=SOURCE_NAME, defaults={"kind": Source.Kind.UPLOAD, "public": True,
                                    "chunk_size": CHUNK_SIZE, "chunk_overlap": CHUNK_OVERLAP})
    # Documents an earlier, interrupted run left half-way: their tasks went with that run's
    # queues, so they go through the pipeline again (with a new version; old tasks are dropped).
    leftovers = source.documents.exclude(status__in=(Document.Status.INDEXED, Document.Status.FAILED))
    for document in leftovers.iterator():
        document_reindex(document=document)
    loaded = corpus_ingest(dataset=dataset, source=source)
    pks = list(loaded.documents.values())
    if documents_pending(source, pks):
        started = time.monotonic()
        last = [0]

        def progress(done: int) -> None:
            if done - last[0] >= 250 or done == len(pks):
                last[0] = done
                print(f"  indexed {done}/{len(pks)} documents, {time.monotonic() - started:.0f} s", flush=True)

        documents_wait(source=source, document_pks=pks, timeout=timeout, on_progress=progress, poll=5.0)
        search_index().optimize()
    failed = Document.objects.filter(source=source, status=Document.Status.FAILED).count()
    if failed:
        print(f"  {failed} documents failed in the pipeline", flush=True)
    return source


# --- Measuring ----------------------------------------------------------------------------------
def evaluation_access(source):
    from ingestion.search_index import AccessFilter

    return AccessFilter(everything=True, source_ids=(source.pk,))


def candidates(queries: dict[str, str], *, source, vectors: dict | None = None) -> dict[str, list]:
    """Every fused candidate of each query, unboosted and uncut: `retrieve`'s own steps (both
    lists `candidates` deep, fused), so the head of each list is exactly what `retrieve` returns
    before feedback, and the tail is what the boost can lift when tuning. Each query's embedding
    goes into `vectors` when given."""
    from dataclasses import replace

    from chat.retrieval import default_fusion, fuse
    from ingestion.embedding import embedder
    from ingestion.search_index import search_index

    fusion = replace(default_fusion(), feedback_weight=0.0)
    index, access, model = search_index(), evaluation_access(source), embedder()
    found = {}
    for qid, text in queries.items():
        vector = model.encode([text.strip()])[0].tolist()
        if vectors is not None:
            vectors[qid] = vector
        found[qid] = fuse({"bm25": index.bm25(text.strip(), k=fusion.candidates, access=access),
                           "knn": index.knn(vector, k=fusion.candidates, access=access)}, fusion=fusion)
    return found


def rankings_of(hits_by_query: dict[str, list], external: dict[int, str]) -> dict[str, list[str]]:
    from chat.evaluation import documents_ranked

    return {qid: documents_ranked(external[h.document_id] for h in hits if h.document_id in external)
            for qid, hits in hits_by_query.items()}


def ndcg(rankings: dict[str, list[str]], qrels) -> float:
    from chat.evaluation import ndcg_at

    return sum(ndcg_at(ranked, qrels.get(qid, {}), 10) for qid, ranked in rankings.items()) / max(1, len(rankings))


def retrieved_now(queries: dict[str, str], *, source) -> dict[str, list]:
    """The top 30 chunks (at least 10 documents) as users get them now: `retrieve` with the
    configured fusion and feedback boost."""
    from chat.retrieval import retrieve

    return {qid: retrieve(text, access=evaluation_access(source), k=30) for qid, text in queries.items()}


# --- Tuning on train only ----------------------------------------------------------------------
def simulated_votes(hits_by_query: dict[str, list], qrels, external: dict[int, str]) -> dict[str, list[tuple]]:
    """chunk id -> (rating, query id) of each user per query who judged it among the top SHOWN."""
    votes: dict[str, list[tuple]] = {}
    for qid, hits in hits_by_query.items():
        judged = qrels.get(qid, {})
        for hit in hits[:SHOWN]:
            rating = 1 if judged.get(external.get(hit.document_id, ""), 0) > 0 else -1
            votes.setdefault(hit.chunk_id, []).append((rating, qid))
    return votes


def reranked(hits_by_query: dict[str, list], feedback: dict[str, tuple[float, bytes]], vectors: dict,
             **boost) -> dict[str, list]:
    """Each query's candidates re-ranked by `apply_feedback` with the simulated scores and
    profiles, as `retrieve` would."""
    from dataclasses import replace

    from chat.retrieval import apply_feedback
    from feedback.profiles import unit_vector

    out = {}
    for qid, hits in hits_by_query.items():
        held = [replace(h, feedback=feedback[h.chunk_id][0], feedback_profile=feedback[h.chunk_id][1])
                if h.chunk_id in feedback else h for h in hits]
        out[qid] = apply_feedback(held, question=unit_vector(vectors[qid]), **boost)
    return out


def simulated_feedback(votes: dict[str, list[tuple]], vectors: dict, *, prior: float,
                       down: float) -> dict[str, tuple[float, bytes]]:
    """chunk id -> (score, encoded question profile) for fresh votes, computed by the feedback
    consumer's own functions (feedback/selectors.py, feedback/profiles.py)."""
    import numpy as np
    from django.utils import timezone

    from feedback.profiles import QuestionProfile
    from feedback.selectors import Vote, feedback_score, vote_weight

    now = timezone.now()
    out = {}
    for chunk_id, cast in votes.items():
        fresh = [(Vote(feedback_id=0, user_id=0, chunk_id=chunk_id, document_id=None, rating=r, reason="",
                       on_chunk=True, at=now, hour_rank=0), q) for r, q in cast]
        score = feedback_score([v for v, _ in fresh], now=now, prior=prior, down_weight=down)
        profile = QuestionProfile.from_votes(
            (vote_weight(v, now=now, down_weight=down), np.asarray(vectors[q], dtype=np.float32)) for v, q in fresh)
        out[chunk_id] = (score, profile.encode() if profile else b"")
    return out


def tune(train_hits: dict[str, list], vectors: dict, qrels, external: dict[int, str]) -> None:
    """Grid over the boost's settings: votes from half of the train queries, the gain measured
    on that half (seen) and the change on the other half (unseen). First the score alone
    (FEEDBACK_PRIOR, FEEDBACK_DOWN_WEIGHT, SEARCH_FEEDBACK_WEIGHT), then with the question
    context (SEARCH_FEEDBACK_CONTEXT_*)."""
    from django.conf import settings

    ids = sorted(train_hits)
    random.Random(7).shuffle(ids)
    seen_ids, unseen_ids = set(ids[: len(ids) // 2]), set(ids[len(ids) // 2:])
    seen = {q: train_hits[q] for q in seen_ids}
    unseen = {q: train_hits[q] for q in unseen_ids}
    votes = simulated_votes(seen, qrels, external)
    base_seen = ndcg(rankings_of(seen, external), qrels)
    base_unseen = ndcg(rankings_of(unseen, external), qrels)
    print(f"tuning: {len(seen)} seen / {len(unseen)} unseen train queries, {sum(map(len, votes.values()))} votes; "
          f"nDCG@10 before {base_seen:.4f} / {base_unseen:.4f}")

    def measure(feedback, **boost) -> tuple[float, float]:
        gain = ndcg(rankings_of(reranked(seen, feedback, vectors, **boost), external), qrels) - base_seen
        loss = ndcg(rankings_of(reranked(unseen, feedback, vectors, **boost), external), qrels) - base_unseen
        return gain, loss

    print("the score alone")
    print(f"  {'prior':>5} {'down':>5} {'weight':>6}   {'seen':>7} {'unseen':>7}")
    for prior in (0.5, 1.0, 2.0, 4.0):
        for down in (1.0, 0.5, 0.25, 0.0):
            feedback = simulated_feedback(votes, vectors, prior=prior, down=down)
            for weight in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
                gain, loss = measure(feedback, weight=weight)
                print(f"  {prior:>5} {down:>5} {weight:>6}   {gain:+.4f} {loss:+.4f}", flush=True)
    prior, down = settings.FEEDBACK_PRIOR, settings.FEEDBACK_DOWN_WEIGHT
    print(f"with the question context (FEEDBACK_PRIOR {prior}, FEEDBACK_DOWN_WEIGHT {down})")
    print(f"  {'weight':>6} {'context':>7} {'thresh':>6} {'cprior':>6}   {'seen':>7} {'unseen':>7}")
    feedback = simulated_feedback(votes, vectors, prior=prior, down=down)
    for weight in (0.0, 0.5, 1.0, 1.5):
        for context in (1.0, 2.0, 3.0):
            for threshold in (0.5, 0.6, 0.7, 0.8, 0.9):
                for context_prior in (0.25, 1.0):
                    gain, loss = measure(feedback, weight=weight, context_weight=context,
                                         context_threshold=threshold, context_prior=context_prior)
                    print(f"  {weight:>6} {context:>7} {threshold:>6} {context_prior:>6}   {gain:+.4f} {loss:+.4f}",
                          flush=True)


# --- The replay through the real feedback path ---------------------------------------------------
def feedback_reset(source) -> None:
    """Forget the feedback of an earlier run: votes, tallies, the replay's users, index scores."""
    from django.contrib.auth.models import User

    from feedback.models import ChunkFeedback, DocumentFeedback, EvaluationCase, Feedback
    from ingestion.models import Chunk
    from ingestion.search_index import search_index

    User.objects.filter(username__startswith="replay-").delete()
    for model in (Feedback, ChunkFeedback, DocumentFeedback, EvaluationCase):
        model.objects.all().delete()
    ids = list(Chunk.objects.filter(document__source=source).values_list("id", flat=True))
    search_index().set_feedback(dict.fromkeys(ids, 0.0), {})
    index_refresh()


def index_refresh() -> None:
    """Rewritten rows back into the full-text index (the worker does it a second after its own
    writes), so BM25 is measured on the same statistics before and after."""
    from ingestion.search_index import search_index

    search_index().refresh()


def consumer_settled(timeout: float = 600) -> float:
    """Wait until every vote is counted and written to the index; returns the seconds waited."""
    import redis
    from django.conf import settings
    from django.db.models import F

    from feedback.models import ChunkFeedback, Feedback

    r = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.REDIS_KEY_PREFIX
    started = time.monotonic()
    while True:
        busy = (r.llen(f"{prefix}feedback") or r.exists(f"{prefix}feedback:flush-scheduled")
                or r.scard(f"{prefix}feedback:dirty-chunks"))
        voted = set(Feedback.objects.exclude(chunk_id="").values_list("chunk_id", flat=True).distinct())
        tallied = set(ChunkFeedback.objects.filter(indexed_score=F("score")).values_list("chunk_id", flat=True))
        if not busy and voted <= tallied:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise SystemExit(f"The feedback consumer did not settle in {timeout:.0f} s "
                             f"({len(voted - tallied)} voted chunks not written).")
        time.sleep(0.5)


def table_version() -> int:
    import lancedb
    from django.conf import settings

    return lancedb.connect(str(settings.SEARCH_INDEX_DIR)).open_table("chunks").version


def replay(queries: dict[str, str], qrels, external: dict[int, str]) -> dict[str, float]:
    """Each query asked by its own user through the chat's answer service (top SHOWN passages),
    each passage voted on through feedback_record, as the chat socket records votes."""
    from django.conf import settings
    from django.contrib.auth.models import User

    from chat.selectors import Asker
    from chat.services import answer_ask
    from feedback.services import feedback_record

    settings.CHAT_PASSAGES = SHOWN
    votes = ups = 0
    writes_before = table_version()
    started = time.monotonic()
    for number, (qid, text) in enumerate(queries.items(), start=1):
        user = User.objects.create(username=f"replay-{qid}")
        message = answer_ask(asker=Asker(user=user), question=text)
        judged = qrels.get(qid, {})
        for entry in message.retrieved:
            rating = 1 if judged.get(external.get(entry["document_id"], ""), 0) > 0 else -1
            feedback_record(user=user, message_id=message.pk, rating=rating, chunk_id=entry["chunk_id"])
            votes += 1
            ups += rating > 0
        if number % 100 == 0:
            print(f"  asked and voted {number}/{len(queries)} queries, {time.monotonic() - started:.0f} s", flush=True)
    asked = time.monotonic() - started
    waited = consumer_settled()
    index_refresh()
    return {"votes": votes, "up": ups, "seconds": asked, "settle_seconds": waited,
            "index_writes": table_version() - writes_before}


def vote_latency(queries: dict[str, str], *, samples: int) -> list[float]:
    """Seconds from a vote to its chunk's new score being read back from the search index, one
    vote at a time (each by a new user, on a passage of the answer to a test query)."""
    from django.contrib.auth.models import User

    from chat.selectors import Asker
    from chat.services import answer_ask
    from feedback.services import feedback_record
    from ingestion.search_index import search_index

    index = search_index()
    latencies = []
    for number, (qid, text) in enumerate(list(queries.items())[:samples]):
        user = User.objects.create(username=f"replay-latency-{qid}")
        message = answer_ask(asker=Asker(user=user), question=text)
        chunk_id = message.retrieved[number % len(message.retrieved)]["chunk_id"]
        held = index.get_chunks([chunk_id])[chunk_id].feedback
        rating = -1 if held > 0 else 1
        started = time.monotonic()
        feedback_record(user=user, message_id=message.pk, rating=rating, chunk_id=chunk_id)
        while abs(index.get_chunks([chunk_id])[chunk_id].feedback - held) < 1e-6:
            if time.monotonic() - started > 60:
                raise SystemExit(f"The vote on {chunk_id} was not visible after 60 s.")
            time.sleep(0.01)
        latencies.append(time.monotonic() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--var-dir", default=None, help="Keep the stack (database, index) here and reuse it.")
    parser.add_argument("--index-only", action="store_true", help="Index the corpus and stop.")
    parser.add_argument("--tune", action="store_true", help="Only search the prior and weight on the train split.")
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=7200, help="Seconds to wait for indexing.")
    args = parser.parse_args()

    env = stack_setup(args.var_dir)
    from django.conf import settings

    from chat.evaluation import beir_load
    from ingestion.models import Document

    train = beir_load(args.dataset, split="train")
    test = beir_load(args.dataset, split="test")
    print(f"{train.name}: {len(train.corpus)} documents, {len(train.queries)} train and {len(test.queries)} test "
          f"queries; stack in {os.environ['FRESHET_VAR_DIR']}", flush=True)
    with worker(env, log=Path(os.environ["FRESHET_VAR_DIR"]) / "worker.log"):
        source = corpus_index(train, timeout=args.timeout)
        if args.index_only:
            return
        feedback_reset(source)
        external = dict(Document.objects.filter(source=source).values_list("pk", "external_id"))
        started = time.monotonic()
        vectors: dict = {}
        train_hits = candidates(train.queries, source=source, vectors=vectors)
        if args.tune:  # train only: the test split is never looked at while choosing
            tune(train_hits, vectors, train.qrels, external)
            return
        test_hits = candidates(test.queries, source=source)
        print(f"retrieved the candidates of every query in {time.monotonic() - started:.0f} s", flush=True)
        before_seen = ndcg(rankings_of(train_hits, external), train.qrels)
        before_unseen = ndcg(rankings_of(test_hits, external), test.qrels)
        print(f"before: nDCG@10 train {before_seen:.4f}, test {before_unseen:.4f}", flush=True)

        stats = replay(train.queries, train.qrels, external)
        print(f"replayed {stats['votes']} votes ({stats['up']} up) from {len(train.queries)} users in "
              f"{stats['seconds']:.0f} s; the consumer settled {stats['settle_seconds']:.1f} s later, "
              f"{stats['index_writes']} index writes", flush=True)
        after_seen = ndcg(rankings_of(retrieved_now(train.queries, source=source), external), train.qrels)
        after_unseen = ndcg(rankings_of(retrieved_now(test.queries, source=source), external), test.qrels)
        latencies = vote_latency(test.queries, samples=args.latency_samples)

    print(f"\nFeedback replay on {train.name} (FEEDBACK_PRIOR={settings.FEEDBACK_PRIOR}, "
          f"FEEDBACK_DOWN_WEIGHT={settings.FEEDBACK_DOWN_WEIGHT}, "
          f"SEARCH_FEEDBACK_WEIGHT={settings.SEARCH_FEEDBACK_WEIGHT}, "
          f"SEARCH_FEEDBACK_CONTEXT_WEIGHT={settings.SEARCH_FEEDBACK_CONTEXT_WEIGHT}, "
          f"SEARCH_FEEDBACK_CONTEXT_THRESHOLD={settings.SEARCH_FEEDBACK_CONTEXT_THRESHOLD}, "
          f"SEARCH_FEEDBACK_CONTEXT_PRIOR={settings.SEARCH_FEEDBACK_CONTEXT_PRIOR}, "
          f"FEEDBACK_FLUSH_SECONDS={settings.FEEDBACK_FLUSH_SECONDS})")
    print(f"  {'nDCG@10':<22} {'before':>7} {'after':>7} {'change':>7}")
    print(f"  {'train (seen) ' + str(len(train.queries)):<22} {before_seen:7.4f} {after_seen:7.4f} "
          f"{after_seen - before_seen:+7.4f}")
    print(f"  {'test (unseen) ' + str(len(test.queries)):<22} {before_unseen:7.4f} {after_unseen:7.4f} "
          f"{after_unseen - before_unseen:+7.4f}")
    print(f"  vote -> score visible in the index, {len(latencies)} votes: p50 {percentile(latencies, 50):.2f} s, "
          f"p95 {percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s")


if __name__ == "__main__":
    sys.exit(main())
