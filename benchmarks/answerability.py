"""Answerability: does the chat abstain when the sources do not answer, and answer when they do?

Two protocols over SciFact (BEIR layout, ../shared/datasets/scifact), through the real pipeline
and the real retrieval (`chat.retrieval.retrieval_run`, the function the chat calls):

1. Off-topic: the whole corpus indexed; the 300 SciFact test questions (answerable) beside the
   200 general-knowledge questions of benchmarks/data/offtopic_questions.txt that no abstract
   answers. Target: >= 95% of the off-topic abstained while >= 95% of the test questions answer.
2. Near misses: only a fixed random half of the corpus is searched (seed 16). Test questions
   whose judged abstracts are all in that half are answerable, those whose judged abstracts are
   all in the other half are not (the half still holds abstracts on their topics). Reported: the
   answer rate on the answerable (and with a judged abstract as the first passage), the
   abstention rate on the unanswerable, and the curve over the threshold. Target: >= 40%
   abstained at 90% answered.

Everything that is chosen is chosen on SciFact's *train* split only: the coefficients of the
relevance model (`--fit` prints them for chat/retrieval/answerability.py) and the thresholds.
The corpus goes into two sources, one per half, so both protocols share one index (protocol 2
searches one source; BM25's document frequencies still count the whole table, a small
difference from an index of half the corpus).

    .venv/bin/python benchmarks/answerability.py --var-dir /tmp/freshet-answerability [--fit] [--cv 12]

`--cv SEEDS` prints protocol 2 cross-validated within train (what features are chosen by, so
that each model shipped is looked at on test once); `--features a,b*c` fits and cross-validates
another set of Evidence fields and products instead of FEATURES.

The stack (database, index) is kept in --var-dir, so a second run reuses the index and the
features measured (var-dir/features.json; --refresh measures again).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import django_setup, worker  # noqa: E402

if TYPE_CHECKING:
    from chat.retrieval.answerability import Evidence

DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "scifact"
OFFTOPIC = Path(__file__).resolve().parent / "data" / "offtopic_questions.txt"
OFFTOPIC_TRAIN = Path(__file__).resolve().parent / "data" / "offtopic_train.txt"  # for fitting only
HALVES = ("answerability-a", "answerability-b")
SEED = 16
CHUNK_SIZE, CHUNK_OVERLAP = 254, 32  # the evaluation profile of `manage.py evaluate`
K = 5  # passages the chat gives the answer (CHAT_PASSAGES)


def stack_setup(var_dir: str) -> dict[str, str]:
    Path(var_dir).mkdir(parents=True, exist_ok=True)
    env = {"FRESHET_VAR_DIR": str(Path(var_dir).resolve()), "FRESHET_KEY_PREFIX": f"freshet-bench-{os.getpid()}:"}
    for name in ("ELASTICSEARCH_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ.update(env)
    env.update(django_setup(isolated=False))
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def offtopic_questions(path: Path = OFFTOPIC) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def halves_index(corpus, *, timeout: float, halves: int = 2):
    """The corpus split in two fixed random halves, each in its own source, indexed."""
    from chat.evaluation import BeirDataset, corpus_ingest, documents_pending, documents_wait
    from ingestion.models import Document, Source
    from ingestion.search_index import search_index

    ids = sorted(d.id for d in corpus)
    random.Random(SEED).shuffle(ids)
    half = set(ids[: len(ids) // 2])
    sources, pks = [], {}
    for name, part in zip(HALVES, ([d for d in corpus if d.id in half], [d for d in corpus if d.id not in half]),
                          strict=True):
        source, _ = Source.objects.get_or_create(
            name=name, defaults={"kind": Source.Kind.UPLOAD, "public": False, "chunk_size": CHUNK_SIZE,
                                 "chunk_overlap": CHUNK_OVERLAP})
        loaded = corpus_ingest(dataset=BeirDataset(name=name, corpus=part, queries={}, qrels={}), source=source)
        sources.append(source)
        pks[source.pk] = list(loaded.documents.values())
    started = time.monotonic()
    for source in sources[:halves]:
        if documents_pending(source, pks[source.pk]):
            def progress(done: int, total=len(pks[source.pk]), name=source.name) -> None:
                if done % 250 < 10 or done == total:
                    print(f"  {name}: indexed {done}/{total}, {time.monotonic() - started:.0f} s", flush=True)
            documents_wait(source=source, document_pks=pks[source.pk], timeout=timeout, on_progress=progress,
                           poll=5.0)
    search_index().optimize()
    failed = Document.objects.filter(source__in=sources, status=Document.Status.FAILED).count()
    if failed:
        print(f"  {failed} documents failed in the pipeline", flush=True)
    return sources, half


def features_measure(questions: dict[str, str], *, sources) -> dict[str, list[dict]]:
    """For each question, the top K passages: BEIR document id and evidence."""
    from chat.retrieval import retrieval_run
    from ingestion.models import Document
    from ingestion.search_index import AccessFilter

    access = AccessFilter(everything=True, source_ids=tuple(s.pk for s in sources))
    external = dict(Document.objects.filter(source__in=sources).values_list("pk", "external_id"))
    out = {}
    for qid, text in questions.items():
        found = retrieval_run(text, access=access, k=K)
        out[qid] = [{"doc": external.get(h.document_id, ""), **e.as_dict()} for h, e in zip(found.hits, found.evidence,
                                                                                            strict=True)]
    return out



def evidence_cpu(questions: dict[str, str], *, sources, rounds: int = 2) -> list[float]:
    """CPU ms of each `evidence_for` call (and the relevance of its passages), on the candidate
    lists retrieval makes for `questions` (fetched first, outside what is timed)."""
    from chat.retrieval import query_vector
    from chat.retrieval.answerability import relevance
    from chat.retrieval.ranking import default_fusion, fuse
    from chat.retrieval.selectors import evidence_for
    from ingestion.search_index import AccessFilter, search_index

    access = AccessFilter(everything=True, source_ids=tuple(s.pk for s in sources))
    index, depth = search_index(), default_fusion().candidates
    lists = []
    for text in questions.values():
        bm25, knn = index.bm25(text, k=depth, access=access), index.knn(query_vector(text), k=depth, access=access)
        lists.append((text, fuse({"bm25": bm25, "knn": knn})[:K], bm25, knn))
    cpu = []
    for _ in range(rounds):
        for text, hits, bm25, knn in lists:
            started = time.process_time()
            [relevance(e) for e in evidence_for(text, hits, bm25_hits=bm25, knn_hits=knn)]
            cpu.append((time.process_time() - started) * 1000)
    return cpu

# --- Scoring ------------------------------------------------------------------------------------
def evidence(row: dict) -> Evidence:
    from chat.retrieval.answerability import EVIDENCE, Evidence

    return Evidence(**{name: row[name] for name in EVIDENCE})


def relevances(rows: list[dict], coefficients: dict[str, float]) -> list[float]:
    from chat.retrieval.answerability import relevance

    return [relevance(evidence(r), coefficients) for r in rows]


def design(rows: list[dict], features: tuple[str, ...]) -> np.ndarray:
    """The model's inputs, a bias column first."""
    return np.array([[1.0] + [evidence(r).feature(name) for name in features] for r in rows])


def training_rows(halfm: dict, train_off: dict, qrels, answerable: list[str],
                  unanswerable: list[str]) -> tuple[list[dict], list[float]]:
    """The passages to fit on and their labels: of the answerable questions, a passage of a judged
    abstract answers and the others do not; no passage of the unanswerable and of the train
    split's own off-topic questions does."""
    rows, labels = [], []
    for qid in answerable:
        rows += halfm[qid]
        labels += [1.0 if row["doc"] in judged(qrels, qid) else 0.0 for row in halfm[qid]]
    for found in [*(halfm[qid] for qid in unanswerable), *train_off.values()]:
        rows += found
        labels += [0.0] * len(found)
    return rows, labels


def cross_validated(halfm: dict, train_off: dict, qrels, answerable: list[str], unanswerable: list[str], *,
                    features: tuple[str, ...], seeds: int, folds: int = 5) -> tuple[float, float]:
    """Protocol 2 within train: the questions (and the train off-topic ones) in `folds` random
    folds, each scored by a model fitted on the others; the unanswerable abstained at the
    threshold answering 90% of the held-out answerable, mean and standard error over folds and
    seeds. What features are chosen by, so the test figures are looked at once."""
    results = []
    for seed in range(seeds):
        shuffled = [list(group) for group in (answerable, unanswerable, train_off)]
        for group in shuffled:
            random.Random(seed).shuffle(group)
        for fold in range(folds):
            fit_a, fit_u, fit_o = ([q for i, q in enumerate(group) if i % folds != fold] for group in shuffled)
            rows, labels = training_rows(halfm, {q: train_off[q] for q in fit_o}, qrels, fit_a, fit_u)
            w = logistic_fit(design(rows, features), np.array(labels))
            weights = {"bias": float(w[0]), **dict(zip(features, map(float, w[1:]), strict=True))}
            held_a, held_u = ([q for i, q in enumerate(group) if i % folds == fold] for group in shuffled[:2])
            t = threshold_for([best(halfm[q], weights) for q in held_a], 0.90)
            results.append(float(np.mean([best(halfm[q], weights) < t for q in held_u])))
    return float(np.mean(results)), float(np.std(results) / np.sqrt(len(results)))


GATE = {"cosine": 0.0}  # CHAT_MIN_COSINE in force: set in main()


def max_cosine(rows: list[dict]) -> float:
    return max((r["cosine"] for r in rows), default=0.0)


def best(rows: list[dict], coefficients) -> float:
    """The question's best passage relevance, 0 when it is off-topic (as retrieval_run scores).
    The recorded passages are the top K fused ones, so their best cosine can be a little below
    the kNN list's best that the product gates on."""
    if max_cosine(rows) < GATE["cosine"]:
        return 0.0
    return max(relevances(rows, coefficients), default=0.0)


def logistic_fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; x has a bias column first."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) + l2 * np.r_[0, w[1:]]
        hessian = (x.T * (p * (1 - p))) @ x + l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
        w -= np.linalg.solve(hessian, gradient)
    return w


def judged(qrels, qid) -> set[str]:
    return {doc for doc, score in qrels.get(qid, {}).items() if score > 0}


def split_answerable(qrels, queries, half: set[str]) -> tuple[list[str], list[str]]:
    answerable, unanswerable = [], []
    for qid in queries:
        docs = judged(qrels, qid)
        if docs and docs <= half:
            answerable.append(qid)
        elif docs and not docs & half:
            unanswerable.append(qid)
    return answerable, unanswerable


def threshold_for(scores: list[float], answered: float) -> float:
    """The highest threshold that still answers `answered` of the questions scoring `scores`."""
    ordered = sorted(scores, reverse=True)
    return ordered[max(0, int(np.ceil(answered * len(ordered))) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", default="/tmp/freshet-answerability")
    parser.add_argument("--dataset", default=str(DATASET))
    parser.add_argument("--fit", action="store_true", help="Fit the relevance model on train and print it.")
    parser.add_argument("--refresh", action="store_true", help="Measure the features again.")
    parser.add_argument("--cv", type=int, default=0, metavar="SEEDS",
                        help="Print protocol 2's 5-fold cross-validation within train, over SEEDS shuffles.")
    parser.add_argument("--features", default="",
                        help="The model's inputs for --fit and --cv, comma-separated (default: FEATURES).")
    parser.add_argument("--time-evidence", action="store_true",
                        help="Print the CPU of the evidence (evidence_for) per test question, half index.")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--half-only", action="store_true",
                        help="Index (and search) only the first half; protocol 1 then counts the test questions "
                             "whose judged abstracts are in it (a shortcut where the whole corpus takes too long).")
    args = parser.parse_args()

    env = stack_setup(args.var_dir)
    from chat.evaluation import beir_load
    from chat.retrieval.answerability import COEFFICIENTS, EVIDENCE, FEATURES

    test, train = beir_load(args.dataset, split="test"), beir_load(args.dataset, split="train")
    offtopic = {f"off-{i}": q for i, q in enumerate(offtopic_questions())}
    offtopic_train = {f"off-train-{i}": q for i, q in enumerate(offtopic_questions(OFFTOPIC_TRAIN))}
    cache = Path(args.var_dir) / "features.json"
    print(f"SciFact: {len(test.corpus)} abstracts, {len(train.queries)} train / {len(test.queries)} test questions, "
          f"{len(offtopic)} off-topic; stack in {args.var_dir}", flush=True)
    if args.half_only:
        cache = cache.with_name("features-half.json")
    with worker(env, log=Path(args.var_dir) / "worker.log"):
        sources, half = halves_index(test.corpus, timeout=args.timeout, halves=1 if args.half_only else 2)
        measured = json.loads(cache.read_text()) if cache.exists() and not args.refresh else None
        if measured is not None and not all(name in row for found in measured["half"].values() for row in found
                                            for name in EVIDENCE):
            measured = None  # measured before the evidence gained fields: measure again
        if measured is None:
            started = time.monotonic()
            half_features = features_measure({**test.queries, **train.queries, **offtopic}, sources=sources[:1])
            measured = {
                "full": half_features if args.half_only else features_measure(
                    {**test.queries, **train.queries, **offtopic}, sources=sources),
                "half": half_features,
            }
            print(f"  features of {sum(len(v) for v in measured.values())} questions in "
                  f"{time.monotonic() - started:.0f} s", flush=True)
            cache.write_text(json.dumps(measured))
        if "train_off" not in measured:  # off-topic questions for fitting, added after the first runs
            measured["train_off"] = features_measure(offtopic_train, sources=sources[:1])
            cache.write_text(json.dumps(measured))
        if args.time_evidence:
            cpu = evidence_cpu(test.queries, sources=sources[:1])
            print(f"evidence_for CPU per call, {len(test.queries)} test questions x 2 rounds (half index): mean "
                  f"{np.mean(cpu):.2f} ms, median {np.median(cpu):.2f} ms", flush=True)
    full, halfm = measured["full"], measured["half"]
    train_ans, train_unans = split_answerable(train.qrels, train.queries, half)
    test_ans, test_unans = split_answerable(test.qrels, test.queries, half)

    coefficients = dict(COEFFICIENTS)
    features = tuple(args.features.split(",")) if args.features else FEATURES
    if args.cv:
        mean, error = cross_validated(halfm, measured["train_off"], train.qrels, train_ans, train_unans,
                                      features=features, seeds=args.cv)
        print(f"5-fold cross-validation on train ({args.cv} seeds), unanswerable abstained at 90% of the held-out "
              f"answerable answered: {mean:.1%} ± {error:.1%}  [{', '.join(features)}]")
    if args.fit:
        rows, labels = training_rows(halfm, measured["train_off"], train.qrels, train_ans, train_unans)
        w = logistic_fit(design(rows, features), np.array(labels))
        coefficients = {"bias": float(w[0]), **{name: float(v) for name, v in zip(features, w[1:], strict=True)}}
        print("fitted on train (paste into chat/retrieval/answerability.py COEFFICIENTS):")
        print("  " + json.dumps({k: round(v, 3) for k, v in coefficients.items()}))
        print(f"  {len(rows)} passages, {int(sum(labels))} answering")
        coefficients = {k: round(v, 3) for k, v in coefficients.items()}

    from django.conf import settings

    # Protocol 1: the off-topic gate, then the threshold answering 96% of the train questions,
    # over the whole corpus. The gate is the lowest that still abstains on every train off-topic
    # question (tried from keeping 95% of the train questions up, by half a percent): a higher
    # one only turns answerable questions away, near misses' included (seen at 97%: 5% of the
    # answerable half-corpus questions gated out).
    train_p1 = train_ans if args.half_only else list(train.queries)
    test_p1 = test_ans if args.half_only else list(test.queries)
    train_cosines = [max_cosine(full[q]) for q in train_p1]
    gate = kept = 0.0
    for keep in np.arange(0.95, 0.9951, 0.005):
        GATE["cosine"] = threshold_for(train_cosines, float(keep))
        t = threshold_for([best(full[q], coefficients) for q in train_p1], 0.96)
        if all(best(r, coefficients) < t for r in measured["train_off"].values()):
            gate, kept = GATE["cosine"], float(keep)
    GATE["cosine"] = gate
    train_full = [best(full[q], coefficients) for q in train_p1]
    t1 = threshold_for(train_full, 0.96)
    print(f"\nchosen on train: CHAT_MIN_COSINE={gate:.3f} (keeps {kept:.1%} of the train questions, the most that "
          "leaves every train off-topic question abstained)")
    test_scores = [best(full[q], coefficients) for q in test_p1]
    off_scores = [best(full[q], coefficients) for q in offtopic]

    print(f"chosen on train: CHAT_RELEVANCE_THRESHOLD={t1:.3f} answers 96% of the train questions and abstains on "
          f"{np.mean([best(r, coefficients) < t1 for r in measured['train_off'].values()]):.0%} of the train "
          "off-topic ones")
    print("\nProtocol 1, off-topic (" + ("half the corpus searched; test questions answerable in it"
                                       if args.half_only else "whole corpus indexed") + "):")
    for name, t in (("chosen on train (96% of train answered)", t1), ("CHAT_RELEVANCE_THRESHOLD",
                                                                      settings.CHAT_RELEVANCE_THRESHOLD)):
        answered = np.mean([s >= t for s in test_scores])
        abstained = np.mean([s < t for s in off_scores])
        print(f"  threshold {t:.3f} ({name}): SciFact test answered {answered:.1%} ({len(test_scores)}), "
              f"off-topic abstained {abstained:.1%} ({len(off_scores)})")

    # Protocol 2: near misses over half the corpus.
    def rates(t: float, ans: list[str], unans: list[str], qrels) -> tuple[float, float, float]:
        answered = [q for q in ans if best(halfm[q], coefficients) >= t]
        cited_first = [q for q in answered if halfm[q] and halfm[q][0]["doc"] in judged(qrels, q)]
        abstained = [q for q in unans if best(halfm[q], coefficients) < t]
        return len(answered) / len(ans), len(cited_first) / len(ans), len(abstained) / len(unans)

    t2 = threshold_for([best(halfm[q], coefficients) for q in train_ans], 0.90)
    print(f"\nProtocol 2, near misses (half the corpus; test: {len(test_ans)} answerable, {len(test_unans)} not; "
          f"train: {len(train_ans)} / {len(train_unans)}):")
    for name, t in (("90% of train answerable answered", t2), ("CHAT_RELEVANCE_THRESHOLD",
                                                               settings.CHAT_RELEVANCE_THRESHOLD)):
        a, c, u = rates(t, test_ans, test_unans, test.qrels)
        print(f"  threshold {t:.3f} ({name}): answerable answered {a:.1%} (judged abstract first {c:.1%}), "
              f"unanswerable abstained {u:.1%}")
    a, c, u = rates(t2, train_ans, train_unans, train.qrels)
    print(f"  train itself (in sample) at {t2:.3f}: answerable answered {a:.1%} (judged abstract first {c:.1%}), "
          f"unanswerable abstained {u:.1%}")
    tc = threshold_for([max((r["cosine"] for r in halfm[q]), default=0) for q in test_ans], 0.90)
    abst = np.mean([max((r["cosine"] for r in halfm[q]), default=0) < tc for q in test_unans])
    print(f"  baseline, plain best cosine at 90% of test answerable answered: unanswerable abstained {abst:.1%}")
    print("  curve (test): threshold, answerable answered, judged first, unanswerable abstained")
    for t in np.linspace(0.05, 0.95, 19):
        a, c, u = rates(float(t), test_ans, test_unans, test.qrels)
        print(f"    {t:.2f}  {a:6.1%}  {c:6.1%}  {u:6.1%}")
    for target in (0.95, 0.90, 0.80):
        t = threshold_for([best(halfm[q], coefficients) for q in test_ans], target)
        a, c, u = rates(t, test_ans, test_unans, test.qrels)
        print(f"  at {a:.0%} of test answerable answered (threshold {t:.3f}): unanswerable abstained {u:.1%}")


if __name__ == "__main__":
    main()
