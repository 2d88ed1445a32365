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

`--tune` also searches the boost weight and the smoothing prior on the train split alone (votes
from one half of the train queries, gains measured on that half, harm on the other half) by
re-ranking the same fused candidate lists with `chat.retrieval.apply_feedback`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _stack import django_setup, worker

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
           "DJANGO_DEBUG": "1", "ELASTICSEARCH_URL": "", "DATABASE_URL": ""}
    for name in ("ELASTICSEARCH_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
        env.pop(name)
    os.environ.update(env)
    django_setup(isolated=False)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def corpus_index(dataset, *, timeout: float):
    """The dataset's corpus in its own public source, indexed (waits for the worker)."""
    from chat.evaluation import corpus_ingest, documents_pending, documents_wait
    from ingestion.models import Document, Source
    from ingestion.search_index import search_index

    source, _ = Source.objects.get_or_create(
        name=SOURCE_NAME, defaults={"kind": Source.Kind.UPLOAD, "public": True,
                                    "chunk_size": CHUNK_SIZE, "chunk_overlap": CHUNK_OVERLAP})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--var-dir", default=None, help="Keep the stack (database, index) here and reuse it.")
    parser.add_argument("--index-only", action="store_true", help="Index the corpus and stop.")
    parser.add_argument("--timeout", type=float, default=7200, help="Seconds to wait for indexing.")
    args = parser.parse_args()

    env = stack_setup(args.var_dir)
    from chat.evaluation import beir_load

    train = beir_load(args.dataset, split="train")
    print(f"{train.name}: {len(train.corpus)} documents, stack in {os.environ['FRESHET_VAR_DIR']}", flush=True)
    with worker(env, log=Path(os.environ["FRESHET_VAR_DIR"]) / "worker.log"):
        corpus_index(train, timeout=args.timeout)
        if args.index_only:
            return


if __name__ == "__main__":
    sys.exit(main())
