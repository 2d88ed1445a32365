from django.core.management.base import BaseCommand

from ingestion.rebuild import index_rebuild


class Command(BaseCommand):
    help = ("Build a new generation of the search index from the database's chunks while the current one "
            "serves, then switch to it and drop the old one. With --model, every chunk is encoded again "
            "with that embedding model (set EMBEDDING_MODEL to it for the workers too).")

    def add_arguments(self, parser):
        parser.add_argument("--model", metavar="NAME",
                            help="The embedding model of the new generation (a Hub id or a local path); "
                                 "default: EMBEDDING_MODEL.")
        parser.add_argument("--grace", type=float, default=2.0, metavar="SECONDS",
                            help="How long the old generation stays after the switch, for searches and "
                                 "writes on their way to it.")

    def handle(self, *args, model: str | None = None, grace: float = 2.0, **options):
        report = index_rebuild(model=model, grace_seconds=grace, progress=self.stdout.write)
        self.stdout.write(self.style.SUCCESS(
            f"Generation {report.generation} serves, built with {report.model}"
            f"{' (every chunk encoded again)' if report.reembedded else ''}: {report.documents} documents, "
            f"{report.caught_up} copied again after changing during the rebuild."))
