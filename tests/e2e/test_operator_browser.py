"""The operator's view in a real browser (Debian's Chromium driven by Playwright) against a real
daphne server and Celery worker: sign in to the admin, register a folder source, drop a file into
the folder, sync it, and watch the dashboard follow live until the document is indexed.
Screenshots go to a folder under the test's tmp path (printed)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from ingestion.models import Document, Source
from tests.e2e.test_chat_browser import PASSWORD, chromium, daphne_server  # noqa: F401  (fixture)
from tests.factories import UserFactory

pytestmark = pytest.mark.worker

# Nothing wider than the window, nor scrolling inside it.
FITS = ("document.documentElement.scrollWidth <= window.innerWidth && [...document.querySelectorAll("
        "'#changelist .results, #dashboard .panel')].every((e) => e.scrollWidth <= e.clientWidth + 1)")


def test_register_a_folder_source_and_watch_the_dashboard_until_indexed(worker, daphne_server, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nScreenshots: {shots}")
    folder = tmp_path / "handbook"
    folder.mkdir()
    operator = UserFactory(username="operator", is_staff=True, is_superuser=True)

    with sync_api.sync_playwright() as playwright:
        browser = chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 900})  # one session, two tabs
        admin = context.new_page()
        admin.goto(f"{daphne_server}/admin/")
        assert "/admin/login/" in admin.url
        admin.fill("#id_username", operator.username)
        admin.fill("#id_password", PASSWORD)
        admin.click("input[type=submit], button[type=submit]")
        admin.wait_for_selector("#site-name")
        assert "Freshet" in admin.inner_text("#site-name")
        admin.screenshot(path=str(shots / "admin-index.png"), full_page=True)

        # Register the folder source with the admin's form.
        admin.goto(f"{daphne_server}/admin/ingestion/source/add/")
        admin.fill("#id_name", "handbook")
        admin.select_option("#id_kind", "folder")
        if admin.locator("#id_config").count():
            admin.fill("#id_config", json.dumps({"path": str(folder)}))
        else:  # a form with a field per setting
            admin.locator("input[name$='path']").first.fill(str(folder))
        admin.click("input[name=_save]")
        admin.wait_for_selector("#changelist")
        admin.screenshot(path=str(shots / "admin-sources.png"), full_page=True)
        assert admin.evaluate(FITS), "the source list is wider than 1280 px"

        dashboard = context.new_page()
        problems: list[str] = []
        dashboard.on("pageerror", lambda error: problems.append(str(error)))
        dashboard.on("console", lambda message: message.type == "error" and problems.append(message.text))
        dashboard.goto(f"{daphne_server}/dashboard/")  # the admin's session signs it in
        try:
            dashboard.wait_for_selector("#live[data-connected='true']", timeout=30_000)
        finally:
            dashboard.screenshot(path=str(shots / "dashboard-connecting.png"), full_page=True)
        assert not problems, problems
        assert dashboard.get_attribute("#dashboard", "data-indexed") == "0"
        dashboard.screenshot(path=str(shots / "dashboard-before.png"), full_page=True)

        # A file lands in the folder; "Sync now" picks it up.
        (folder / "leave.md").write_text("# Leave\n\nEveryone gets thirty days of leave a year.\n")
        row = admin.locator("#result_list tbody tr", has_text="handbook")
        row.locator("input.action-select").check()
        admin.select_option("select[name=action]", "sync_now")
        admin.click("button[name=index]")
        admin.wait_for_selector(".messagelist")
        assert "Sync started" in admin.inner_text(".messagelist")

        # The dashboard follows live: the events as they happen, then the count of indexed documents.
        dashboard.wait_for_selector("#live-events li[data-type='freshet.document.changed']", timeout=60_000)
        dashboard.wait_for_selector("#live-events li[data-type='freshet.document.indexed']", timeout=120_000)
        dashboard.wait_for_function("document.getElementById('dashboard').dataset.indexed === '1'", timeout=30_000)
        row_text = dashboard.inner_text("#sources tbody")
        assert "handbook" in row_text and "folder" in row_text
        assert dashboard.inner_text("#tile-freshness").startswith("p50 ")
        assert dashboard.inner_text("#tile-freshness") != "p50 –"
        assert dashboard.evaluate(FITS), "the dashboard is wider than 1280 px"
        dashboard.screenshot(path=str(shots / "dashboard-indexed.png"), full_page=True)

        admin.goto(f"{daphne_server}/admin/ingestion/document/")
        assert "Indexed" in admin.inner_text("#result_list")
        assert admin.evaluate(FITS), "the document list is wider than 1280 px"
        admin.screenshot(path=str(shots / "admin-documents.png"), full_page=True)
        admin.goto(f"{daphne_server}/admin/events/event/")
        assert admin.evaluate(FITS), "the event log is wider than 1280 px"
        assert "Delete selected" not in admin.content()
        admin.screenshot(path=str(shots / "admin-events.png"), full_page=True)
        browser.close()

    def indexed_document() -> Document:
        try:
            return Document.objects.get(source=Source.objects.get(name="handbook"))
        finally:
            connection.close()  # this thread's own connection, or the test database cannot be dropped

    with ThreadPoolExecutor(1) as pool:  # the ORM outside Playwright's event loop
        document = pool.submit(indexed_document).result()
    assert (document.external_id, document.status) == ("leave.md", Document.Status.INDEXED)

    # /metrics on the real server: from loopback yes; a proxied request without the token no.
    metrics = httpx.get(f"{daphne_server}/metrics", timeout=30)
    assert metrics.status_code == 200 and 'freshet_documents{source="handbook",status="indexed"} 1.0' in metrics.text
    assert httpx.get(f"{daphne_server}/metrics", headers={"X-Forwarded-For": "198.51.100.4"},
                     timeout=30).status_code == 403
    print(f"Screenshots: {sorted(p.name for p in shots.iterdir())}")
