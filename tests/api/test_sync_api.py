"""Syncs through the REST API and the admin: starting one, listing runs, and the per-kind
configuration check (the same `config_clean` in the API serializers and the admin form)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_celery_beat.models import PeriodicTask

from ingestion.connectors import config_clean
from ingestion.connectors.base import CONNECTORS
from ingestion.connectors.sync import sync_start
from ingestion.models import Document, Source, SyncRun
from ingestion.services import source_schedule_name
from tests.conftest import client_for, wait_for
from tests.factories import SourceFactory, UserFactory


@pytest.fixture
def folder_src(db, tmp_path):
    path = tmp_path / "docs"
    path.mkdir()
    (path / "a.md").write_text("# A\n\nAlpha.")
    return SourceFactory(name="docs", kind=Source.Kind.FOLDER, config=config_clean("folder", {"path": str(path)}))


@pytest.mark.worker
def test_staff_start_a_sync_and_follow_its_run(worker, staff, tmp_path):
    path = tmp_path / "docs"
    path.mkdir()
    (path / "a.md").write_text("# A\n\nAlpha.")
    source = SourceFactory(name="docs", kind=Source.Kind.FOLDER, config=config_clean("folder", {"path": str(path)}))
    client = client_for(staff)

    response = client.post(f"/api/sources/{source.pk}/sync/")

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["source"], body["trigger"], body["status"]) == (source.pk, "api", "running")
    run = wait_for(lambda: SyncRun.objects.filter(pk=body["id"]).exclude(status="running").first(),
                   timeout=120, message="the sync run to finish")
    assert (run.status, run.items_new) == ("succeeded", 1)
    listed = client.get(f"/api/sources/{source.pk}/syncs/").json()
    assert listed["count"] == 1 and listed["results"][0]["items_new"] == 1
    assert Document.objects.filter(source=source, external_id="a.md").exists()


def test_a_second_sync_while_one_runs_is_409(staff, folder_src):
    running = sync_start(source=folder_src, trigger="test")
    response = client_for(staff).post(f"/api/sources/{folder_src.pk}/sync/")
    assert response.status_code == 409
    assert f"already running (sync run {running.pk}" in response.json()["detail"]


def test_only_staff_start_syncs_and_invisible_sources_are_404(member, outsider, folder_src, restricted_source):
    assert client_for(member).post(f"/api/sources/{folder_src.pk}/sync/").status_code == 403
    assert client_for(outsider).post(f"/api/sources/{restricted_source.pk}/sync/").status_code == 404
    assert client_for(outsider).get(f"/api/sources/{restricted_source.pk}/syncs/").status_code == 404
    assert not SyncRun.objects.exists()


def test_an_upload_source_has_nothing_to_sync(staff, public_source):
    response = client_for(staff).post(f"/api/sources/{public_source.pk}/sync/")
    assert response.status_code == 400 and "nothing to sync" in response.json()["detail"]


def test_run_errors_are_for_staff_only(staff, member, folder_src):
    run = sync_start(source=folder_src, trigger="test")
    SyncRun.objects.filter(pk=run.pk).update(status="failed", error="http://10.0.0.7/ refused")
    assert client_for(staff).get(f"/api/sources/{folder_src.pk}/syncs/").json()["results"][0]["error"]
    assert client_for(member).get(f"/api/sources/{folder_src.pk}/syncs/").json()["results"][0]["error"] is None


# --- Configuration checks -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("folder", {}, "path: is required for a folder source"),
    ("folder", {"path": "/etc"}, "path: /etc is outside the folders Freshet may read"),
    ("folder", {"path": "{tmp}", "depth": 3}, "depth: unknown key for a folder source"),
    ("upload", {"url": "https://example.org/"}, "url: unknown key for a upload source"),
    ("url", {}, "url:"),
    ("url", {"url": "file:///etc/passwd"}, "url:"),
    ("url", {"url": "http://169.254.169.254/latest/meta-data/"}, "url:"),
    ("feed", {"url": "https://example.org/feed", "colour": "red"}, "colour: unknown key"),
])
def test_bad_configurations_are_refused_by_the_api_with_a_message(staff, tmp_path, kind, config, message):
    if kind not in CONNECTORS:
        pytest.skip(f"the {kind} kind is not registered yet")
    config = {key: value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
              for key, value in config.items()}
    response = client_for(staff).post("/api/sources/", {"name": "bad", "kind": kind, "config": config},
                                      format="json")
    assert response.status_code == 400, response.content
    assert any(message in problem for problem in response.json()["errors"]["config"]), response.json()
    assert not Source.objects.filter(name="bad").exists()


def test_a_kind_change_is_checked_against_the_stored_config(staff, public_source):
    response = client_for(staff).patch(f"/api/sources/{public_source.pk}/", {"kind": "folder"}, format="json")
    assert response.status_code == 400
    assert "path: is required for a folder source" in response.json()["errors"]["config"][0]


def test_a_good_folder_source_is_created_normalised_and_scheduled(staff, tmp_path):
    response = client_for(staff).post("/api/sources/", {
        "name": "share", "kind": "folder", "config": {"path": f"{tmp_path}/"}, "schedule_minutes": 30,
        "prune": False}, format="json")
    assert response.status_code == 201, response.content
    source = Source.objects.get(name="share")
    assert source.config["path"] == str(tmp_path) and source.prune is False
    task = PeriodicTask.objects.get(name=source_schedule_name(source.pk))
    assert (task.task, task.args, task.interval.every, task.interval.period) == (
        "ingestion.tasks.source_sync_scheduled", f"[{source.pk}]", 30, "minutes")

    client_for(staff).patch(f"/api/sources/{source.pk}/", {"schedule_minutes": 5}, format="json")
    assert PeriodicTask.objects.get(name=source_schedule_name(source.pk)).interval.every == 5
    client_for(staff).patch(f"/api/sources/{source.pk}/", {"schedule_minutes": None}, format="json")
    assert not PeriodicTask.objects.filter(name=source_schedule_name(source.pk)).exists()


# --- The admin ------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, db):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def _source_form(**fields) -> dict:
    return {"name": "share", "kind": "folder", "config": "{}", "public": "on", "prune": "on", **fields}


def test_the_admin_form_shows_config_problems_next_to_the_field(admin_client):
    response = admin_client.post("/admin/ingestion/source/add/", _source_form(config='{"path": "/etc"}'))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "/etc is outside the folders Freshet may read" in errors["config"][0]
    assert not Source.objects.filter(name="share").exists()


def test_the_admin_form_saves_a_good_folder_source_with_its_schedule(admin_client, tmp_path):
    response = admin_client.post("/admin/ingestion/source/add/",
                                 _source_form(config=f'{{"path": "{tmp_path}"}}', schedule_minutes="15"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    source = Source.objects.get(name="share")
    assert PeriodicTask.objects.get(name=source_schedule_name(source.pk)).interval.every == 15


def test_the_admin_refuses_uploads_into_a_connector_source(admin_client, folder_src):
    response = admin_client.post("/admin/ingestion/document/add/", {
        "source": folder_src.pk, "external_id": "", "title": "", "uri": "",
        "upload": SimpleUploadedFile("x.md", b"# X\n\nuploaded beside the folder"),
        "chunks-TOTAL_FORMS": "0", "chunks-INITIAL_FORMS": "0",
    })
    assert response.status_code == 200
    assert "is a folder source; its documents come from its connector" in \
        response.context["adminform"].form.errors["source"][0]
    assert not Document.objects.exists()


def test_the_api_refuses_uploads_into_a_connector_source(staff, folder_src):
    response = client_for(staff).post("/api/documents/", {
        "source": folder_src.pk, "file": SimpleUploadedFile("x.md", b"# X\n\ntext")}, format="multipart")
    assert response.status_code == 400
    assert "is a folder source" in response.json()["errors"]["source"][0]


def test_the_admin_lists_counts_and_the_last_sync_and_syncs_now(admin_client, folder_src):
    from ingestion.connectors.sync import source_sync

    source_sync(folder_src, trigger="test")
    page = admin_client.get("/admin/ingestion/source/").content.decode()
    assert "Last sync" in page and ">succeeded</a>" in page

    SyncRun.objects.all().delete()
    response = admin_client.post("/admin/ingestion/source/", {
        "action": "sync_now", "_selected_action": [folder_src.pk]}, follow=True)
    assert response.status_code == 200
    assert "Sync started for 1 source" in response.content.decode()
    assert SyncRun.objects.get(source=folder_src).trigger == "admin"
