import sys

from django.core.management.base import BaseCommand, CommandError

from ingestion.models import Source
from ingestion.reconciliation import differences_fix, index_differences


class Command(BaseCommand):
    help = ("Compare the database's chunks with the search index's, per source (missing, stale, surplus); "
            "--fix repairs them. Exit status 0 when they match, 1 when differences remain.")

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true",
                            help="Write differing documents again from the database and delete orphan chunks.")
        parser.add_argument("--source", metavar="NAME", help="Only this source.")

    def handle(self, *args, fix: bool, source: str | None = None, **options):
        source_row = None
        if source is not None:
            source_row = Source.objects.filter(name=source).first()
            if source_row is None:
                raise CommandError(f"There is no source {source!r}.")
        differences = index_differences(source=source_row)
        for entry in differences:
            self.stdout.write(entry.summary())
        if fix and any(not entry.clean for entry in differences):
            repaired = differences_fix([entry for entry in differences if not entry.clean])
            self.stdout.write(f"Repaired {repaired} documents or sources; checking again.")
            differences = index_differences(source=source_row)
            for entry in differences:
                if not entry.clean:
                    self.stdout.write(entry.summary())
        remaining = [entry for entry in differences if not entry.clean]
        if remaining:
            self.stdout.write(self.style.WARNING(f"{len(remaining)} sources differ from the index."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS("The index matches the database."))
