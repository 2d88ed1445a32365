"""The polite, guarded fetcher (ingestion/connectors/http.py) against a real local server."""

from __future__ import annotations

import threading

import pytest

from events.errors import TransientError
from ingestion.connectors.base import ItemFailed
from ingestion.connectors.http import FetchRefused, page_get
from tests.ingestion.connectors.websites import Answer, http_date


def test_it_names_freshet_and_a_304_costs_one_request_and_no_body(website):
    website.page("/a", "<p>hello</p>", etag='"v1"')
    first = page_get(website.url("/a"))
    assert (first.status, first.content, first.etag) == (200, b"<p>hello</p>", '"v1"')
    again = page_get(website.url("/a"), etag=first.etag)
    assert again.not_modified and again.content is None
    assert website.hits["/a"] == 2
    headers = [h for path, h, _ in website.requests if path == "/a"]
    assert headers[0]["User-Agent"].startswith("Freshet/")
    assert headers[1]["If-None-Match"] == '"v1"'


def test_it_asks_if_modified_since_with_the_stored_last_modified(website):
    stamp = http_date(-3600)
    website.page("/b", "<p>b</p>", last_modified=stamp)
    assert page_get(website.url("/b")).last_modified == stamp
    assert page_get(website.url("/b"), last_modified=stamp).not_modified


def test_robots_txt_is_obeyed_and_read_once_per_host(website):
    website.robots("User-agent: *\nAllow: /\n\nUser-agent: Freshet\nDisallow: /private\n")
    website.page("/private/plan", "secret")
    website.page("/public", "open")
    with pytest.raises(FetchRefused, match="robots.txt of http://127.0.0.1:.* does not allow"):
        page_get(website.url("/private/plan"))
    assert page_get(website.url("/public")).content == b"open"
    assert website.hits["/private/plan"] == 0
    assert website.hits["/robots.txt"] == 1


def test_a_429_is_retried_after_its_retry_after(website):
    website.answer("/busy", Answer(429, b"slow down", headers={"Retry-After": "1"}), Answer(body=b"done"))
    assert page_get(website.url("/busy")).content == b"done"
    times = [at for path, _, at in website.requests if path == "/busy"]
    assert len(times) == 2 and times[1] - times[0] >= 0.9


def test_a_retry_after_past_the_wait_budget_gives_up_at_once(website):
    website.answer("/later", Answer(429, b"", headers={"Retry-After": "3600"}))
    with pytest.raises(TransientError, match="Retry-After.*WEB_RETRY_WAIT_MAX"):
        page_get(website.url("/later"))
    assert website.hits["/later"] == 1


def test_a_500_is_tried_a_bounded_number_of_times_then_is_transient(website, settings):
    settings.WEB_RETRIES = 1
    website.answer("/broken", Answer(500, b"oops"))
    with pytest.raises(TransientError, match="answered 500 \\(2 tries\\)"):
        page_get(website.url("/broken"))
    assert website.hits["/broken"] == 2


def test_a_missing_page_fails_the_item(website):
    with pytest.raises(ItemFailed, match="answered 404 \\(not found\\)"):
        page_get(website.url("/nothing"))


def test_a_body_over_the_limit_fails_declared_or_not(website):
    website.page("/big", b"x" * 5000)
    website.page("/streamed", b"y" * 5000, length=False)
    with pytest.raises(ItemFailed, match="is 5000 bytes; the limit is 1000"):
        page_get(website.url("/big"), max_bytes=1000)
    with pytest.raises(ItemFailed, match="more than 1000 bytes"):
        page_get(website.url("/streamed"), max_bytes=1000)
    assert page_get(website.url("/streamed"), max_bytes=5000).content == b"y" * 5000


def test_a_body_still_trickling_at_the_timeout_fails(website, settings):
    settings.WEB_TIMEOUT = 1
    website.page("/slow", b"z" * 400, trickle=0.1)  # 25 pieces, 2.5 s: each piece is in time, the whole is not
    with pytest.raises(ItemFailed, match="longer than 1 s to send its body"):
        page_get(website.url("/slow"))


def test_redirects_are_followed_a_few_times_and_a_loop_is_named(website):
    website.redirect("/old", "/new")
    website.page("/new", "moved here")
    page = page_get(website.url("/old"))
    assert (page.url, page.content) == (website.url("/new"), b"moved here")
    website.redirect("/ping", "/pong")
    website.redirect("/pong", "/ping")
    with pytest.raises(ItemFailed, match="redirects in a loop"):
        page_get(website.url("/ping"))
    for n in range(8):
        website.redirect(f"/hop{n}", f"/hop{n + 1}")
    with pytest.raises(ItemFailed, match="more than 5 times"):
        page_get(website.url("/hop0"))


def test_a_redirect_to_the_metadata_address_or_a_file_is_refused(website):
    website.redirect("/cloud", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchRefused, match="169.254.169.254 is a link-local, metadata or reserved address"):
        page_get(website.url("/cloud"))
    with pytest.raises(FetchRefused, match="Only http and https"):
        page_get("file:///etc/passwd")
    website.redirect("/file", "file:///etc/passwd")
    with pytest.raises(FetchRefused, match="Only http and https"):
        page_get(website.url("/file"))


def test_one_host_gets_at_most_its_concurrency_and_a_delay_between_starts(website, settings):
    settings.WEB_HOST_CONCURRENCY = 1
    website.page("/slowish", b"s" * 64, trickle=0.05)
    threads = [threading.Thread(target=page_get, args=(website.url("/slowish"),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert website.hits["/slowish"] == 3 and website.most_in_flight == 1

    settings.WEB_HOST_CONCURRENCY = 4
    settings.WEB_HOST_DELAY = 0.3
    website.page("/quick", "q")
    page_get(website.url("/quick"))
    page_get(website.url("/quick"))
    times = [at for path, _, at in website.requests if path == "/quick"]
    assert times[1] - times[0] >= 0.25
