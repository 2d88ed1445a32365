"""Where the CPU of one GET /api/search/ goes: each stage of the request run on its own, in this
process, over the SciFact test queries, with the CPU time (all threads: LanceDB's native threads
count) per call.

Needs the SciFact index, loaded as for benchmarks/search_latency.py (same environment):

    .venv/bin/python manage.py evaluate --dataset /work/shared/datasets/scifact
    .venv/bin/python benchmarks/search_breakdown.py [--queries 200] [--rounds 3]

Stages are interleaved (each query through every stage in turn, `--rounds` times). `request
through Django` is the whole synchronous request (middleware, authentication, throttling, the
view, rendering) through Django's test client, the query vector cached as in a warm server;
what search_latency.py's server CPU per request adds to it is the ASGI server (daphne, the
handler's hop to the request thread, HTTP parsing). The LanceDB rows show what the in-memory
paths replace (lancedb_vectors.py, lancedb_bm25.py).

The same split seen from outside, on the server of search_latency.py: record the daphne
process with py-spy while the benchmark runs, then group the samples by stage (each sample goes
to the first stage in STAGES that any of its frames matches, so a database query made while
authenticating counts as authentication):

    .venv/bin/python benchmarks/search_latency.py --requests 2000 &
    .venv/bin/py-spy record -p DAPHNE_PID -f raw -r 200 -d 15 -o spy.txt
    .venv/bin/python benchmarks/search_breakdown.py --py-spy spy.txt

py-spy sees Python threads only: LanceDB's native threads are not in that split (the in-process
figures count them).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _stack import django_setup
from search_latency import prepare_local, queries_of

# (stage, substrings of a py-spy frame "function (file:line)"), most specific first.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("query embedding", ("ingestion/embedding.py", "ingestion/encoders.py", "query_embedding.py")),
    ("BM25 in memory", ("lancedb_bm25.py",)),
    ("kNN in memory, snapshot", ("lancedb_vectors.py",)),
    ("LanceDB calls", ("lancedb/", "lance/")),
    ("fusion and feedback boost", ("retrieval/ranking.py",)),
    ("answerability", ("answerability.py", "evidence_for")),
    ("highlighting", ("highlighting.py",)),
    ("search index plumbing", ("search_index/",)),
    ("search_for_user (access, source names: SQL)", ("retrieval/selectors.py",)),
    ("authentication", ("rest_framework/authentication.py",)),
    ("throttling", ("rest_framework/throttling.py", "ingestion/throttles.py")),
    ("input and output serializers, JSON", ("rest_framework/serializers.py", "rest_framework/fields.py",
                                            "rest_framework/renderers.py", "chat/serializers.py",
                                            "rest_framework/utils/serializer_helpers.py")),
    ("DRF view dispatch, content negotiation", ("rest_framework/",)),
    ("Django handler and middleware", ("django/", "dashboard/metrics", "whitenoise/", "config/asgi_handler.py")),
    ("asgiref thread hop", ("asgiref/",)),
    ("daphne, twisted (HTTP server)", ("daphne/", "twisted/", "autobahn/")),
)


def py_spy_split(path: Path) -> None:
    """Print the samples of a py-spy raw file grouped by STAGES."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        stage = next((name for name, marks in STAGES if any(m in f for f in frames for m in marks)), "other")
        counts[stage] = counts.get(stage, 0) + int(count)
        total += int(count)
    print(f"py-spy samples of {path}: {total} (Python threads, active)")
    for name, count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {name:46s} {100 * count / max(total, 1):5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("/work/shared/datasets/scifact"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--py-spy", type=Path, help="Group this py-spy raw file's samples by stage instead.")
    args = parser.parse_args()
    if args.py_spy:
        py_spy_split(args.py_spy)
        return

    os.environ["THROTTLE_SEARCH"] = "1000000/min"
    token, source_id = prepare_local(args.dataset)
    django_setup(isolated=False)

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client
    from rest_framework.authtoken.models import Token
    from rest_framework.renderers import JSONRenderer
    from rest_framework.test import APIRequestFactory

    from chat.apis.search import SearchApi
    from chat.retrieval import fuse, highlight, query_terms, query_vector, search_for_user
    from chat.retrieval.answerability import relevance
    from chat.retrieval.selectors import evidence_for
    from chat.serializers import SearchInputSerializer, SearchOutputSerializer
    from ingestion.embedding import embedder
    from ingestion.search_index import search_index
    from ingestion.search_index.lancedb_engine import LanceDBIndex
    from ingestion.selectors import access_for_user
    from ingestion.throttles import UserScopedRateThrottle

    queries = queries_of(args.dataset, args.split)[: args.queries]
    user = User.objects.get(username="search-benchmark")
    access = access_for_user(user).narrowed((source_id,))
    index = search_index()
    lance = LanceDBIndex(settings.SEARCH_INDEX_DIR, search_lag_seconds=settings.SEARCH_INDEX_SEARCH_LAG_SECONDS,
                         memory_knn_rows=0)
    depth = max(args.k, settings.SEARCH_CANDIDATES)
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    factory = APIRequestFactory()
    view = SearchApi()
    for query in queries:  # warm: vectors cached, snapshots taken, tables open
        query_vector(query)
        index.bm25(query, k=depth, access=access)
        index.knn(query_vector(query), k=depth, access=access)
    held: dict[str, tuple] = {}

    def lists(query: str) -> tuple:
        if query not in held:
            vector = query_vector(query)
            held[query] = (index.bm25(query, k=depth, access=access), index.knn(vector, k=depth, access=access))
        return held[query]

    def throttle(query: str) -> None:
        request = view.initialize_request(factory.get("/api/search/", {"q": query}))
        request.user = user
        UserScopedRateThrottle().allow_request(request, view)

    found = {q: search_for_user(user=user, query=q, k=args.k, source_id=source_id) for q in queries}

    def serialise(query: str) -> bytes:
        return JSONRenderer().render(SearchOutputSerializer({"results": found[query], "took_ms": 1.0}).data)

    def request(query: str) -> None:
        response = client.get("/api/search/", {"q": query, "k": args.k, "source": source_id})
        if response.status_code != 200:
            raise SystemExit(f"GET /api/search/ answered {response.status_code}: {response.content[:200]!r}")

    def evidence(query: str) -> None:
        bm25_hits, knn_hits = lists(query)
        hits = fuse({"bm25": bm25_hits, "knn": knn_hits})[: args.k]
        [relevance(e) for e in evidence_for(query, hits, bm25_hits=bm25_hits, knn_hits=knn_hits)]

    try:  # the prepared-statement lookup the search view uses (absent from older trees)
        from config.authentication import token_with_user
    except ImportError:
        token_with_user = None
    cut_at_fusion = "limit" in inspect.signature(fuse).parameters

    def fused_top_k(query: str) -> list:
        """Fusion as retrieval_run calls it for a query whose candidates have no votes."""
        bm25_hits, knn_hits = lists(query)
        if cut_at_fusion:
            return fuse({"bm25": bm25_hits, "knn": knn_hits}, limit=args.k)
        return fuse({"bm25": bm25_hits, "knn": knn_hits})[: args.k]

    top = {q: fused_top_k(q) for q in queries}

    def highlighting(query: str) -> list[str]:
        terms = query_terms(query)
        return [highlight(hit.text, terms) for hit in top[query]]

    stages: dict[str, Callable[[str], object]] = {
        "authentication (ORM token lookup)": lambda q: Token.objects.select_related("user").get(key=token),
        **({"authentication (prepared statement)": lambda q: token_with_user(Token, token)}
           if token_with_user else {}),
        "throttling (cache get + set)": throttle,
        "input serializer": lambda q: SearchInputSerializer(data={"q": q, "source": source_id}).is_valid(),
        "query embedding, uncached": lambda q: embedder().encode([q]),
        "query embedding, cached": query_vector,
        "BM25, LanceDB": lambda q: lance.bm25(q, k=depth, access=access),
        "BM25, in memory": lambda q: index.bm25(q, k=depth, access=access),
        "kNN, LanceDB": lambda q: lance.knn(query_vector(q), k=depth, access=access),
        "kNN, in memory": lambda q: index.knn(query_vector(q), k=depth, access=access),
        "fusion (convex, 2 x 100)": lambda q: fuse({"bm25": lists(q)[0], "knn": lists(q)[1]}),
        "fusion, top k kept": fused_top_k,
        "highlighting (top k)": highlighting,
        "answerability evidence (top k)": evidence,
        "search_for_user (whole retrieval)": lambda q: search_for_user(user=user, query=q, k=args.k,
                                                                       source_id=source_id),
        "output serializer and JSON": serialise,
        "request through Django (no ASGI)": request,
    }
    cpu: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(args.rounds):
        for query in queries:
            for name, run in stages.items():
                started = time.process_time()
                run(query)
                cpu[name].append((time.process_time() - started) * 1000)
    print(f"CPU per call (ms, all threads), {len(queries)} SciFact {args.split} queries x {args.rounds} rounds, "
          f"k={args.k}, {depth} candidates per list, index {settings.SEARCH_INDEX_DIR} ({index.count()} rows)")
    print(f"  {'stage':36s} {'mean':>7s} {'median':>7s}")
    for name, values in cpu.items():
        print(f"  {name:36s} {statistics.fmean(values):7.2f} {statistics.median(values):7.2f}")


if __name__ == "__main__":
    main()
