import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.models import Document, Source
from ingestion.selectors import sources_visible_to
from ingestion.services import DocumentChangeForbidden, document_ingest, source_get_or_create


def files_under(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"No such file or folder: {raw}")
    return found


class Command(BaseCommand):
    help = "Create or update documents from files and folders (recursively), then optionally wait."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--source", default="uploads", help="Source name (created as a public upload source).")
        parser.add_argument("--wait", action="store_true", help="Wait until each document is indexed or failed.")
        parser.add_argument("--timeout", type=float, default=1800, help="Seconds to wait at most (with --wait).")
        parser.add_argument(
            "--as", dest="as_user", metavar="USER",
            help="Act as this user: new documents are recorded as uploaded by USER, and a file that would "
                 "replace a document USER may not change fails. Without it the command acts as the system.",
        )

    def handle(self, *args, paths, source, wait, timeout, as_user=None, **options):
        user = self._user(as_user) if as_user else None
        files = files_under(paths)
        if not files:
            raise CommandError("No files found.")
        source_row = Source.objects.filter(name=source).first()
        if source_row is None and user is not None and not user.is_staff:
            # As through the REST API, only staff create sources.
            raise CommandError(f"There is no source {source!r}; {user.get_username()} is not staff and may not "
                               "create one. Create it first, or run without --as.")
        if source_row is None:
            source_row = source_get_or_create(name=source)
        if user is not None and not sources_visible_to(user).filter(pk=source_row.pk).exists():
            raise CommandError(f"{user.get_username()} may not see source {source_row.name!r}.")
        documents: dict[int, Path] = {}
        skipped: list[tuple[Path, str]] = []
        changed = 0
        for path in tqdm(files, desc="ingesting", unit="file", disable=None):
            size = path.stat().st_size
            if size > settings.MAX_UPLOAD_BYTES:
                skipped.append((path, f"larger than the {settings.MAX_UPLOAD_BYTES:,}-byte limit"))
                continue
            try:
                result = document_ingest(
                    source=source_row, external_id=str(path.resolve()), content=path.read_bytes(),
                    filename=path.name, uri=path.resolve().as_uri(), user=user,
                )
            except DocumentChangeForbidden as refused:
                skipped.append((path, refused.message))
                continue
            documents[result.document.pk] = path
            changed += result.changed
        self.stdout.write(f"{len(documents)} documents in source {source_row.name!r}: "
                          f"{changed} new or changed, {len(documents) - changed} unchanged.")
        failures = list(skipped)
        if wait:
            failures += self._wait(documents, timeout)
        for path, reason in failures:
            self.stderr.write(f"FAILED {path}: {reason}")
        if failures:
            raise CommandError(f"{len(failures)} of {len(files)} files failed.")
        if wait:
            self.stdout.write(self.style.SUCCESS(f"All {len(documents)} documents indexed."))

    @staticmethod
    def _user(username: str):
        model = get_user_model()
        user = model.objects.filter(**{model.USERNAME_FIELD: username}).first()
        if user is None or not user.is_active:
            raise CommandError(f"No active user {username!r} (--as).")
        return user

    def _wait(self, documents: dict[int, Path], timeout: float) -> list[tuple[Path, str]]:
        done = (Document.Status.INDEXED, Document.Status.FAILED)
        deadline = time.monotonic() + timeout
        with tqdm(total=len(documents), desc="indexing", unit="doc", disable=None) as bar:
            finished: dict[int, tuple[str, str]] = {}
            while len(finished) < len(documents):
                pending = [pk for pk in documents if pk not in finished]
                for pk, status, error in Document.objects.filter(pk__in=pending, status__in=done).values_list(
                    "pk", "status", "error"
                ):
                    finished[pk] = (status, error)
                    bar.update(1)
                gone = set(pending) - set(Document.objects.filter(pk__in=pending).values_list("pk", flat=True))
                for pk in gone:
                    finished[pk] = (Document.Status.FAILED, "deleted while waiting")
                    bar.update(1)
                if len(finished) < len(documents):
                    if time.monotonic() > deadline:
                        raise CommandError(
                            f"Timed out after {timeout:.0f}s with {len(documents) - len(finished)} documents "
                            "still processing. Is a worker running (make run, or celery -A config worker)?"
                        )
                    time.sleep(0.2)
        return [(documents[pk], error) for pk, (status, error) in finished.items() if status == Document.Status.FAILED]
