"""The sync engine (ingestion/connectors/sync.py) on the folder kind: a real temporary folder,
real PostgreSQL, and for the end-to-end cases a real Celery worker and search index."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from chat.retrieval import retrieve
from events.models import Event
from ingestion.connectors import base, sync
from ingestion.connectors.folder import FolderConnector
from ingestion.models import Document, SyncItem, SyncRun
from ingestion.search_index import AccessFilter, search_index
from ingestion.services import document_ingest
from ingestion.tasks import source_sync_list
from tests.conftest import wait_for
from tests.ingestion.connectors.conftest import changed_events, folder_source, settled


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def bump_mtime(path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@pytest.mark.worker
def test_it_indexes_everything_does_no_work_when_nothing_changed_and_follows_changes(worker, folder):
    write(folder / "fjords.md", "# Fjords\n\nFjords are long narrow inlets carved by glaciers.")
    write(folder / "teams/rota.txt", "The on-call rota rotates every Tuesday at noon.")
    write(folder / "guide.html", "<html><head><title>Guide</title></head><body><p>Bring crampons.</p></body></html>")
    source = folder_source(folder)

    run = sync.source_sync(source, trigger="test")
    assert (run.status, run.items_seen, run.items_new, run.items_failed) == ("succeeded", 3, 3, 0)
    documents = settled(source, count=3)
    assert {d.status for d in documents} == {Document.Status.INDEXED}, [d.error for d in documents]
    assert {d.external_id for d in documents} == {"fjords.md", "teams/rota.txt", "guide.html"}
    hits = retrieve("on-call rota Tuesday", access=AccessFilter(), k=3)
    assert hits and hits[0].document_id == source.documents.get(external_id="teams/rota.txt").pk
    source.refresh_from_db()
    assert source.last_synced_at is not None
    pipeline_runs = changed_events(source)
    assert pipeline_runs == 3

    again = sync.source_sync(source, trigger="test")
    assert (again.status, again.items_seen, again.items_unchanged, again.items_new, again.items_changed) == \
        ("succeeded", 3, 3, 0, 0)
    assert changed_events(source) == pipeline_runs
    events = Event.objects.filter(subject=f"sources/{source.pk}", type__startswith="freshet.sync.")
    assert list(events.order_by("time").values_list("type", flat=True)) == [sync.SYNC_STARTED, sync.SYNC_FINISHED] * 2
    finished = events.filter(type=sync.SYNC_FINISHED).order_by("time").last()
    assert finished.data["sync_run_id"] == again.pk and finished.data["items_unchanged"] == 3

    # A changed file is re-indexed, a removed one leaves the index.
    a, b = (source.documents.get(external_id=name) for name in ("fjords.md", "teams/rota.txt"))
    b_chunks = [c.id for c in b.chunks.all()]
    assert search_index().get_chunks(b_chunks)
    write(folder / "fjords.md", "# Fjords\n\nFjords are checked by the guide every morning at seven.")
    (folder / "teams/rota.txt").unlink()
    run = sync.source_sync(source, trigger="test")

    assert (run.items_seen, run.items_changed, run.items_deleted, run.items_unchanged) == (2, 1, 1, 1)
    assert not Document.objects.filter(pk=b.pk).exists()
    a.refresh_from_db()
    assert a.version == 2
    wait_for(lambda: not search_index().get_chunks(b_chunks), timeout=60, message="b's chunks to leave the index")
    settled(source, count=2)
    a.refresh_from_db()
    stored = search_index().get_chunks([c.id for c in a.chunks.all()])
    assert any("every morning at seven" in chunk.text for chunk in stored.values())


@pytest.mark.django_db
def test_a_touched_file_with_the_same_content_costs_no_pipeline_work(folder):
    write(folder / "a.txt", "Same words as before.")
    source = folder_source(folder)
    sync.source_sync(source, trigger="test")
    document = source.documents.get()
    version, runs = document.version, changed_events(source)

    bump_mtime(folder / "a.txt")
    run = sync.source_sync(source, trigger="test")

    document.refresh_from_db()
    assert (run.items_unchanged, run.items_changed) == (1, 0)
    assert document.version == version and changed_events(source) == runs
    stat = (folder / "a.txt").stat()
    assert document.marker == f"{stat.st_mtime_ns}:{stat.st_size}"
    # The marker stored, the next sync does not even read the file.
    assert sync.source_sync(source, trigger="test").items_unchanged == 1


@pytest.mark.django_db
def test_prune_off_keeps_documents_whose_files_are_gone(folder):
    write(folder / "a.txt", "kept")
    write(folder / "b.txt", "also kept")
    source = folder_source(folder)
    source.prune = False
    source.save()
    sync.source_sync(source, trigger="test")
    (folder / "b.txt").unlink()

    run = sync.source_sync(source, trigger="test")

    assert (run.items_seen, run.items_deleted) == (1, 0)
    assert source.documents.filter(external_id="b.txt").exists()


class _WatcherDuringListing(FolderConnector):
    """The folder kind, with a file saved and taken in (as the watcher does) while the listing runs."""

    def __init__(self, folder):
        self.folder = folder

    def items(self, source):
        for position, item in enumerate(super().items(source)):
            if position == 0:
                write(self.folder / "late.txt", "saved during the crawl")
                sync.item_sync(source=source, item=FolderConnector().item_at(source, self.folder / "late.txt"))
            yield item


@pytest.mark.django_db
def test_an_item_added_during_a_sync_is_not_pruned(folder, monkeypatch):
    for name in ("a.txt", "b.txt"):
        write(folder / name, f"{name} text")
    source = folder_source(folder)
    monkeypatch.setitem(base.CONNECTORS, "folder", _WatcherDuringListing(folder))

    run = sync.source_sync(source, trigger="test")

    assert run.items_deleted == 0
    assert set(source.documents.values_list("external_id", flat=True)) == {"a.txt", "b.txt", "late.txt"}


@pytest.mark.django_db
def test_only_one_sync_per_source_runs_at_a_time(folder):
    write(folder / "a.txt", "text")
    source = folder_source(folder)
    first = sync.sync_start(source=source, trigger="test")

    with pytest.raises(sync.SyncAlreadyRunning) as refused:
        sync.source_sync(source, trigger="test")
    assert refused.value.run == first and "already running" in refused.value.message
    assert SyncRun.objects.filter(source=source).count() == 1

    # A run whose worker died (no heartbeat for SYNC_STALE_SECONDS) does not block for ever.
    SyncRun.objects.filter(pk=first.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.SYNC_STALE_SECONDS + 1))
    second = sync.source_sync(source, trigger="test")
    first.refresh_from_db()
    assert first.status == "failed" and "Abandoned" in first.error
    assert second.status == "succeeded" and second.items_new == 1


@pytest.mark.django_db
def test_a_source_that_cannot_be_listed_prunes_nothing_and_others_sync(folder, tmp_path):
    write(folder / "a.txt", "text of a")
    broken = folder_source(folder)
    sync.source_sync(broken, trigger="test")
    other_folder = tmp_path / "other"
    write(other_folder / "b.txt", "text of b")
    other = folder_source(other_folder)
    shutil.rmtree(folder)

    failed = sync.source_sync(broken, trigger="test")
    fine = sync.source_sync(other, trigger="test")

    assert failed.status == "failed" and "does not exist" in failed.error and "nothing was pruned" in failed.error
    assert broken.documents.filter(external_id="a.txt").exists()
    broken.refresh_from_db()
    assert (fine.status, fine.items_new) == ("succeeded", 1)


@pytest.mark.django_db
def test_an_item_that_fails_is_counted_and_the_rest_go_on(folder, settings):
    settings.MAX_UPLOAD_BYTES = 100
    write(folder / "big.txt", "x" * 500)
    write(folder / "small.txt", "small")
    source = folder_source(folder)

    run = sync.source_sync(source, trigger="test")

    assert (run.status, run.items_new, run.items_failed) == ("partial", 1, 1)
    assert run.error.startswith("big.txt: 500 bytes is over MAX_UPLOAD_BYTES")
    assert list(source.documents.values_list("external_id", flat=True)) == ["small.txt"]


@pytest.mark.django_db
def test_a_big_source_has_a_bounded_number_of_fetch_tasks_queued(folder, settings):
    settings.SYNC_ITEMS_IN_FLIGHT, settings.SYNC_CHUNK_ITEMS = 6, 3
    for index in range(20):
        write(folder / f"f{index:02}.txt", f"file {index}")
    source = folder_source(folder)
    run = sync.sync_start(source=source, trigger="test")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = f"{settings.REDIS_KEY_PREFIX}sync"
    before = broker.llen(queue)
    try:
        source_sync_list(run.pk)  # the listing task, run here: it queues the first fetch tasks
        assert SyncItem.objects.filter(run=run).count() == 20
        assert broker.llen(queue) - before == 2  # ceil(6 / 3), not ceil(20 / 3)
    finally:
        broker.delete(queue)


def test_document_ingest_as_a_person_into_a_connector_source_is_refused(folder, db, django_user_model):
    from ingestion.services import DocumentSourceNotUploadable

    source = folder_source(folder)
    user = django_user_model.objects.create(username="someone", is_staff=True)
    with pytest.raises(DocumentSourceNotUploadable, match="is a folder source"):
        document_ingest(source=source, external_id="x.txt", content=b"x", user=user)


@pytest.mark.django_db
def test_the_sync_command_waits_prints_a_summary_and_fails_on_item_failures(folder, settings, capsys):
    from django.core.management import CommandError, call_command

    write(folder / "a.txt", "fine")
    source = folder_source(folder)
    call_command("sync", source.name, "--wait")
    assert f"of {source.name!r}: succeeded; 1 seen, 1 new" in capsys.readouterr().out

    settings.MAX_UPLOAD_BYTES = 10
    write(folder / "b.txt", "far too long for the limit")
    with pytest.raises(CommandError, match="had item failures"):
        call_command("sync", str(source.pk), "--wait")
    assert "1 unchanged, 0 deleted, 1 failed" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No source named 'nope'"):
        call_command("sync", "nope")


@pytest.mark.django_db(transaction=True)  # beat's scheduler closes the database connection
def test_beat_runs_the_settings_entries_and_the_source_schedules_from_the_database(folder):
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery_app import app
    from ingestion.services import source_update

    source = folder_source(folder)
    source_update(source=source, schedule_minutes=10)
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.setup_schedule()

    names = set(PeriodicTask.objects.filter(enabled=True).values_list("name", flat=True))
    assert {"search-index-optimize", "pipeline-batches-recover", f"freshet-source-sync-{source.pk}"} <= names
    source_update(source=source, kind="upload", config={})
    assert not PeriodicTask.objects.filter(name=f"freshet-source-sync-{source.pk}").exists()
