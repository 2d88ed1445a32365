"""`manage.py evaluate_cases`: run the reviewers' evaluation cases (made from feedback in the admin)
through the one retrieval function and print nDCG@k and MRR@k."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from chat.evaluation import documents_ranked, mrr_at, ndcg_at
from chat.retrieval import MODES, retrieve
from feedback.selectors import evaluation_cases
from ingestion.search_index import AccessFilter

CHUNKS_PER_DOCUMENT = 3  # chunks asked per document wanted, as `manage.py evaluate` does


class Command(BaseCommand):
    help = ("Run every evaluation case (a question and the document a reviewer says is right) through "
            "retrieval, as staff sees it, and print nDCG@k and MRR@k, with each case's rank.")

    def add_arguments(self, parser):
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--k", type=int, default=10, help="Cut-off for nDCG and MRR (default 10).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")

    def handle(self, *args, mode, k, **options):
        if k < 1:
            raise CommandError("--k must be at least 1.")
        cases = list(evaluation_cases())
        if not cases:
            raise CommandError("There are no evaluation cases yet. Make some in the admin: Feedback, select "
                               "thumbs-down votes with a comment, action 'Make evaluation cases'.")
        rows = []
        for case in cases:
            hits = retrieve(case.query, access=AccessFilter.staff(), k=k * CHUNKS_PER_DOCUMENT, mode=mode)
            ranked = documents_ranked(str(hit.document_id) for hit in hits)
            judged = {str(case.document_id): 1}
            rank = ranked.index(str(case.document_id)) + 1 if str(case.document_id) in ranked[:k] else None
            rows.append({"case": case.pk, "query": case.query, "document": case.document_id, "rank": rank,
                         "ndcg": ndcg_at(ranked, judged, k), "mrr": mrr_at(ranked, judged, k)})
        ndcg = sum(row["ndcg"] for row in rows) / len(rows)
        mrr = sum(row["mrr"] for row in rows) / len(rows)
        if options["json"]:
            self.stdout.write(json.dumps({"mode": mode, "cases": len(rows), f"ndcg@{k}": round(ndcg, 4),
                                          f"mrr@{k}": round(mrr, 4),
                                          "ranks": {row["case"]: row["rank"] for row in rows}}))
            return
        for row in rows:
            where = f"rank {row['rank']}" if row["rank"] else f"not in the top {k}"
            self.stdout.write(f"case {row['case']:>5}  {where:<16}  {row['query'][:70]}")
        self.stdout.write(f"{len(rows)} cases, mode {mode}: nDCG@{k} {ndcg:.4f}  MRR@{k} {mrr:.4f}")
