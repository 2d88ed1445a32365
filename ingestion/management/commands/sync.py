"""`manage.py sync SOURCE [--wait]`: sync a connector source now."""

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.connectors.base import ConfigInvalid
from ingestion.connectors.sync import SourceNotSyncable, SyncAlreadyRunning, source_sync, source_sync_request
from ingestion.models import Source, SyncRun


def _source(name_or_id: str) -> Source:
    source = Source.objects.filter(name=name_or_id).first()
    if source is None and name_or_id.isdigit():
        source = Source.objects.filter(pk=int(name_or_id)).first()
    if source is None:
        raise CommandError(f"No source named {name_or_id!r} (nor with that id); see `manage.py shell` or the admin.")
    return source


def summary(run: SyncRun) -> str:
    return (f"Sync run {run.pk} of {run.source.name!r}: {run.get_status_display().lower()}; "
            f"{run.items_seen} seen, {run.items_new} new, {run.items_changed} changed, "
            f"{run.items_unchanged} unchanged, {run.items_deleted} deleted, {run.items_failed} failed.")


class Command(BaseCommand):
    help = ("Sync a connector source (by name or id): list it, take in what is new or changed, delete what is gone. "
            "Without --wait the sync is queued for the workers; with --wait it runs here, with a progress bar, "
            "prints a summary and exits non-zero if the sync failed or items failed.")

    def add_arguments(self, parser):
        parser.add_argument("source", metavar="SOURCE", help="The source's name or id.")
        parser.add_argument("--wait", action="store_true", help="Run the sync here and wait for it to finish.")

    def handle(self, *args, source: str, wait: bool, **options):
        found = _source(source)
        try:
            if not wait:
                run = source_sync_request(found, trigger="cli")
                self.stdout.write(f"Sync run {run.pk} of {found.name!r} queued; follow it in the admin or at "
                                  f"/api/sources/{found.pk}/syncs/.")
                return
            bar = tqdm(desc=f"sync {found.name}", unit="item", disable=not sys.stderr.isatty(), file=sys.stderr)

            def progress(run: SyncRun) -> None:
                run.refresh_from_db()
                done = run.items_new + run.items_changed + run.items_unchanged + run.items_failed
                bar.total = max(run.items_seen, done)
                bar.n = done
                bar.set_postfix(new=run.items_new, changed=run.items_changed, failed=run.items_failed, refresh=False)
                bar.refresh()

            try:
                run = source_sync(found, trigger="cli", progress=progress)
                progress(run)
            finally:
                bar.close()
        except (SyncAlreadyRunning, SourceNotSyncable, ConfigInvalid) as error:
            raise CommandError(error.message if hasattr(error, "message") else str(error)) from None
        self.stdout.write(summary(run))
        if run.error:
            self.stdout.write(run.error)
        if run.status != SyncRun.Status.SUCCEEDED:
            raise CommandError(f"The sync {'failed' if run.status == SyncRun.Status.FAILED else 'had item failures'}.")
