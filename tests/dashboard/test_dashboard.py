"""/dashboard/: staff only, figures read right from the event log and the tables, offline
assets, and the live feed over the websocket (a Channels group fed after commit)."""

from __future__ import annotations

import re
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.staticfiles import finders
from django.db import transaction
from django.test import Client
from django.utils import timezone

from dashboard.selectors import dashboard_snapshot, quantile
from events.models import Event
from events.services import event_publish
from ingestion.models import Document
from tests.chat.conftest import communicator, session_cookie
from tests.factories import SourceFactory, UserFactory


def test_it_is_for_staff_only(db):
    client = Client()
    assert client.get("/dashboard/").status_code == 302
    client.force_login(UserFactory(username="member"))
    response = client.get("/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.get("/dashboard/data/").status_code == 302


def test_the_page_uses_only_local_assets(db):
    client = Client()
    client.force_login(UserFactory(username="op", is_staff=True))
    page = client.get("/dashboard/").content.decode()
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page)
    assert any("uPlot.iife.min.js" in s for s in scripts)
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    assert finders.find("dashboard/vendor/uplot-1.6.32/uPlot.iife.min.js")  # vendored, served by us
    assert 'id="dashboard-snapshot"' in page and "Freshet" in page


def _event(pk, type, subject, time, **data):
    return Event(id=pk, source="/freshet", type=type, subject=subject, time=time, data=data)


def test_the_snapshot_reads_the_pipeline_from_the_event_log(db, django_assert_max_num_queries):
    handbook, wiki = SourceFactory(name="handbook"), SourceFactory(name="wiki")
    docs = Document.objects.bulk_create([
        Document(source=handbook, external_id="a", status="indexed"),
        Document(source=handbook, external_id="b", status="failed", error="not a PDF"),
        Document(source=wiki, external_id="c", status="pending")])
    now = timezone.now()
    events = []
    # Three versions indexed 1, 2 and 10 s after their change; an old change of the same subject
    # (version 1) must not count for version 2.
    for n, (doc, version, lag) in enumerate([(docs[0], 1, 1.0), (docs[0], 2, 2.0), (docs[2], 1, 10.0)]):
        changed = now - timedelta(minutes=5 - n)
        events += [_event(f"c{n}", "freshet.document.changed", f"documents/{doc.pk}", changed, document_id=doc.pk,
                          version=version),
                   _event(f"i{n}", "freshet.document.indexed", f"documents/{doc.pk}", changed + timedelta(seconds=lag),
                          document_id=doc.pk, version=version)]
    events.append(_event("f1", "freshet.document.failed", f"documents/{docs[1].pk}", now - timedelta(minutes=1),
                         document_id=docs[1].pk, version=1, stage="parsing", reason="The file is not a PDF."))
    events.append(_event("f0", "freshet.document.failed", f"documents/{docs[1].pk}", now - timedelta(hours=2),
                         document_id=docs[1].pk, version=1, stage="parsing", reason="an old failure"))
    Event.objects.bulk_create(events)

    with django_assert_max_num_queries(15):
        snapshot = dashboard_snapshot()

    assert snapshot["freshness"]["count"] == 3
    assert (snapshot["freshness"]["p50"], snapshot["freshness"]["p95"]) == (2.0, 10.0)
    assert snapshot["failures"]["count"] == 1
    assert snapshot["failures"]["newest"][0]["reason"] == "The file is not a PDF."
    by_source = {s["name"]: s["counts"] for s in snapshot["documents"]["by_source"]}
    assert by_source["handbook"] == {"pending": 0, "processing": 0, "indexed": 1, "failed": 1}
    assert by_source["wiki"]["pending"] == 1
    assert sum(snapshot["rates"]["stages"]["changed"]) == 3 and sum(snapshot["rates"]["stages"]["indexed"]) == 3
    assert sum(snapshot["rates"]["stages"]["failed"]) == 1  # the old one is outside the window
    assert set(snapshot["queues"]) == set(settings.FRESHET_QUEUES)
    assert all(isinstance(n, int) for n in snapshot["queues"].values())  # the real broker answered


def test_quantiles_are_nearest_rank():
    assert quantile([], 0.5) is None
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert quantile([float(n) for n in range(1, 101)], 0.95) == 95.0


def test_the_websocket_sends_a_snapshot_then_each_committed_event(transactional_db):
    staff = UserFactory(username="watcher", is_staff=True)
    member = UserFactory(username="outsider")
    staff_cookie, member_cookie = session_cookie(staff), session_cookie(member)
    source = SourceFactory(name="live")

    def publish_and_roll_back() -> str:
        with transaction.atomic():
            kept = event_publish(type="freshet.document.changed", subject="documents/999",
                                 data={"document_id": 999, "source_id": source.pk, "version": 1})
        try:
            with transaction.atomic():
                event_publish(type="freshet.document.failed", subject="documents/998", data={"reason": "ghost"})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        return kept.id

    async def scenario():
        refused = communicator(member_cookie, path="/ws/dashboard/")
        connected, _ = await refused.connect()
        assert not connected

        socket = communicator(staff_cookie, path="/ws/dashboard/")
        connected, _ = await socket.connect()
        assert connected
        first = await socket.receive_json_from(timeout=20)
        assert first["type"] == "snapshot"
        assert any(s["name"] == "live" for s in first["snapshot"]["documents"]["by_source"])

        kept = await sync_to_async(publish_and_roll_back)()
        seen, snapshots = [], 0
        while not any(e["id"] == kept for e in seen) or not snapshots:
            message = await socket.receive_json_from(timeout=20)
            if message["type"] == "events":
                seen += message["events"]
            else:
                snapshots += 1
        assert [e["type"] for e in seen if e["id"] == kept] == ["freshet.document.changed"]
        assert not [e for e in seen if e["subject"] == "documents/998"]  # rolled back: never shown
        await socket.disconnect()

    async_to_sync(scenario)()
