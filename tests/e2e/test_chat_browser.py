"""The chat page in a real browser: Debian's Chromium driven by Playwright, against a real daphne
server and Celery worker: sign in, ask, watch the answer stream in, open a citation and its document
page, vote down with a comment."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from feedback.models import Feedback
from ingestion.services import document_ingest
from tests.chat.conftest import corpus  # noqa: F401  (the indexed corpus fixture)
from tests.conftest import ROOT, _worker_env, daphne_running, wait_for

pytestmark = pytest.mark.worker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def daphne_server(django_db_setup, celery_worker, tmp_path_factory):
    """The ASGI app under daphne on a free loopback port, on the test database and var/ folder."""
    env = _worker_env()
    # DEBUG is off, so WhiteNoise serves collected files only.
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    with daphne_running(env, tmp_path_factory.mktemp("daphne") / "daphne.log") as (url, _pid):
        yield url


def chromium(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def test_sign_in_ask_read_the_citation_and_vote(corpus, daphne_server):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    user = corpus.member
    glacier = corpus.public[0]
    glacier_source = glacier.source
    # The ORM stays outside the Playwright block: its sync API runs an event loop in this thread.
    with sync_api.sync_playwright() as playwright:
        browser = chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        frames: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))

        page.goto(f"{daphne_server}/chat/")
        assert "/accounts/login/" in page.url  # login required
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-login.png"))
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/chat/")
        page.wait_for_selector("#composer[data-connected='true']")

        page.fill("#question", f"How long is the Aurora glacier {corpus.marker}?")
        page.keyboard.press("Enter")
        answer = page.wait_for_selector(".exchange[data-message-id] .answer-text:not(.streaming)", timeout=60_000)
        assert "forty-two kilometres" in answer.inner_text()
        kinds = [json.loads(frame)["type"] for frame in frames]
        assert kinds.count("token") > 3 and kinds[-1] == "answer"  # streamed, then the whole answer
        assert page.url.rstrip("/").split("/")[-1].isdigit()  # the new conversation's address

        # A numbered citation opens its passage, which links to the document.
        cite = page.locator(".answer-text .cite").first
        number = cite.inner_text()
        cite.click()
        source = page.locator(f".source[id$='-{number}']")
        assert source.get_attribute("open") is not None
        assert source.locator(".passage").is_visible() and source.locator(".passage").inner_text().strip()
        link = page.locator(f".source[data-chunk-id^='{glacier.pk}-'] a.source-title").first
        href = link.get_attribute("href")
        assert href.startswith(f"/documents/{glacier.pk}/?passage={glacier.pk}-") and link.inner_text() == glacier.title

        page.click(".answer-actions .vote-down")
        page.wait_for_selector(".answer-actions .vote-down[aria-pressed='true']")
        page.wait_for_selector(".reasons .chip")  # what was wrong? (optional follow-up)
        # A thumbs-down can say why: the comment is stored with the vote.
        page.click(".reasons .chip[data-reason='incomplete']")
        page.fill(".comment-box[data-target='answer'] textarea", "It should also say how thick the ice is.")
        page.click(".comment-box[data-target='answer'] .comment-send")
        page.wait_for_selector(".comment-box[data-target='answer'][data-sent='true']")
        # ... and so can one on a citation.
        page.locator(".sources li .vote-down").first.click()
        citation_box = page.locator(".sources .comment-box textarea").first
        citation_box.fill("This passage is about another glacier.")
        page.locator(".sources .comment-box .comment-send").first.click()
        page.wait_for_selector(".sources .comment-box[data-sent='true']")

        # The citation's document page: the passage highlighted and scrolled into view, the original
        # to download; then back to the conversation.
        chat_url = page.url
        page.goto(f"{daphne_server}{href}")
        mark = page.locator("mark#passage")
        assert "forty-two kilometres" in mark.inner_text()
        page.wait_for_timeout(300)
        box = mark.bounding_box()
        assert box is not None and 0 <= box["y"] < 800  # in view
        assert page.locator("h1.document-title").inner_text() == glacier.title
        assert page.locator("#download").get_attribute("href") == f"/documents/{glacier.pk}/download/"
        page.screenshot(path=str(ARTIFACTS / "document-page.png"), full_page=True)
        page.goto(chat_url)
        page.wait_for_selector("#composer[data-connected='true']")

        page.screenshot(path=str(ARTIFACTS / "chat-laptop.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(400)  # the sidebar slides away at phone width
        assert not page.locator("#conversation-list a").first.is_visible() or \
            page.locator("#sidebar").bounding_box()["x"] + page.locator("#sidebar").bounding_box()["width"] <= 0
        page.screenshot(path=str(ARTIFACTS / "chat-phone.png"), full_page=True)
        page.click("#sidebar-toggle")
        page.wait_for_timeout(400)
        assert page.locator("#sidebar").bounding_box()["x"] == 0
        page.screenshot(path=str(ARTIFACTS / "chat-phone-conversations.png"))
        page.click("#sidebar-toggle")
        page.set_viewport_size({"width": 1280, "height": 800})
        message_id = int(page.locator(".exchange[data-message-id]").first.get_attribute("data-message-id"))

        # The cited document changes: the open page marks the answer stale and offers to ask again.
        with ThreadPoolExecutor(1) as pool:  # the ORM in a thread of its own (no event loop there)
            pool.submit(document_ingest, source=glacier_source, external_id=glacier.external_id,
                        content=b"The Aurora glacier has retreated to nine kilometres.").result()
        page.wait_for_selector(".exchange.stale .stale-banner button", timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "chat-stale.png"), full_page=True)
        page.click(".exchange.stale .stale-banner button")
        page.wait_for_selector(".exchange:nth-of-type(2) .answer-text:not(.streaming)", timeout=60_000)
        assert "nine kilometres" in page.locator(".exchange").last.locator(".answer-text").inner_text()
        page.close()
        browser.close()

    vote = wait_for(lambda: Feedback.objects.filter(user=user, message_id=message_id, chunk_id="").first(),
                    timeout=10, message="the vote to be stored")
    assert vote.rating == -1
    assert vote.comment == "It should also say how thick the ice is." and vote.reason == "incomplete"
    on_citation = Feedback.objects.filter(user=user, message_id=message_id).exclude(chunk_id="").get()
    assert on_citation.rating == -1 and on_citation.comment == "This passage is about another glacier."
