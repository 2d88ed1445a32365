import json

from django.core.management.base import BaseCommand

from chat.retrieval import MODES, retrieve
from ingestion.search_index import AccessFilter


class Command(BaseCommand):
    help = "Search the index as staff and print the top chunks."

    def add_arguments(self, parser):
        parser.add_argument("text")
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--json", action="store_true", help="Print a JSON list of results.")

    def handle(self, *args, text, k, mode, **options):
        hits = retrieve(text, access=AccessFilter.staff(), k=k, mode=mode)
        if options["json"]:
            self.stdout.write(json.dumps([
                {"chunk_id": h.chunk_id, "document_id": h.document_id, "source_id": h.source_id,
                 "title": h.title, "uri": h.uri, "text": h.text, "score": h.score}
                for h in hits
            ]))
            return
        if not hits:
            self.stdout.write("No results.")
        for rank, hit in enumerate(hits, start=1):
            first_line = next((line for line in hit.text.splitlines() if line.strip()), "")[:120]
            self.stdout.write(f"{rank:>3}. {hit.score:.4f}  {hit.title or '(untitled)'}  [doc {hit.document_id}]")
            self.stdout.write(f"     {first_line}")



