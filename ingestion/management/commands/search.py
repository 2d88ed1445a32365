import html
import json
import logging
import os
import re
import sys
import warnings

from django.core.management.base import BaseCommand

from chat.retrieval import MODES, highlight, query_terms, retrieval_run
from ingestion.search_index import AccessFilter

_MARK = re.compile(r"<mark>(.*?)</mark>")


QUIET_LOGGERS = ("", "sentence_transformers", "transformers", "huggingface_hub", "httpx", "lancedb", "chat",
                 "ingestion", "events", "feedback", "config")


def quiet_libraries() -> dict[str, int]:
    """No INFO logs and no progress bars (the model loading its weights) on the terminal: what
    the command prints is the results. `-v 2` keeps them. Returns the levels to restore."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported, if it is
    before = {name: logging.getLogger(name or None).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name or None).setLevel(logging.WARNING)
    if "transformers" in sys.modules:  # imported already: tell it directly (importing it costs 0.4 s)
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    return before


class Command(BaseCommand):
    help = "Search the index as staff and print the top passages: source, title, highlighted passage."
    requires_system_checks: list = []  # a one-shot query: the checks (0.8 s) are `manage.py check`'s

    def add_arguments(self, parser):
        parser.add_argument("text")
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--json", action="store_true", help="Print a JSON list of results.")

    def handle(self, *args, text, k, mode, **options):
        before = quiet_libraries() if options["verbosity"] < 2 else {}
        try:
            with warnings.catch_warnings():
                if before:  # the libraries' own notices too (lancedb warns when anything forks)
                    warnings.simplefilter("ignore", RuntimeWarning)
                self._search(text, k=k, mode=mode, as_json=options["json"])
        finally:
            for name, level in before.items():
                logging.getLogger(name or None).setLevel(level)

    def _search(self, text: str, *, k: int, mode: str, as_json: bool) -> None:
        from ingestion.models import Source

        found = retrieval_run(text, access=AccessFilter.staff(), k=k, mode=mode)
        names = dict(Source.objects.filter(pk__in={h.source_id for h in found.hits}).values_list("pk", "name"))
        terms = query_terms(text)
        if as_json:
            self.stdout.write(json.dumps([
                {"chunk_id": h.chunk_id, "document_id": h.document_id, "source_id": h.source_id,
                 "source": names.get(h.source_id, ""), "title": h.title, "uri": h.uri, "text": h.text,
                 "score": h.score, "relevance": round(r, 4), "relevant": relevant,
                 "highlight": highlight(h.text, terms)}
                for h, r, relevant in zip(found.hits, found.relevance, found.relevant(), strict=True)
            ]))
            return
        if not found.hits:
            self.stdout.write("No results.")
        tty = self.stdout.isatty()
        for rank, (hit, score, relevant) in enumerate(zip(found.hits, found.relevance, found.relevant(),
                                                          strict=True), start=1):
            passage = _MARK.sub(lambda m: f"\033[1;4m{m.group(1)}\033[0m" if tty else f"*{m.group(1)}*",
                                highlight(hit.text, terms))
            verdict = "" if relevant else "  (near miss)"
            self.stdout.write(f"{rank:>3}. {names.get(hit.source_id, '?')} / {hit.title or '(untitled)'}  "
                              f"[doc {hit.document_id}]  score {hit.score:.4f}, relevance {score:.2f}{verdict}")
            self.stdout.write(f"     {html.unescape(passage)}")
