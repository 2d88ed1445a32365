"""`manage.py watch_folders`: the folder watcher (ingestion/connectors/watch.py), a long-running
process of its own (platform/Procfile `watcher`, platform/compose.yaml `watcher`)."""

import signal

from django.core.management.base import BaseCommand

from ingestion.connectors.watch import folders_watch


class Command(BaseCommand):
    help = ("Watch every folder source and take in each file saved, changed, moved or deleted within a second; "
            "a full sync of each runs at start and every FOLDER_RESYNC_SECONDS (0: never).")

    def handle(self, *args, **options):
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write("Watching folder sources (Ctrl-C to stop).")
        folders_watch(stop=lambda: stopping)
        self.stdout.write("Stopped.")
