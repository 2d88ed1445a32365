"""The `sitemap` kind: sitemaps, indexes and gzip through the guarded fetcher; lastmod as the marker;
include/exclude patterns; malformed XML refused whole; end to end through syncs with a real worker,
faults recorded on the sync run while another source syncs unaffected."""

from __future__ import annotations

import pytest

from chat.retrieval import retrieve
from ingestion.connectors import ConfigInvalid, SourceUnavailable, config_clean, connector_for, sync
from ingestion.connectors.sitemap import sitemap_pages
from ingestion.models import Source, SyncRun
from ingestion.search_index import AccessFilter
from tests.conftest import wait_for
from tests.factories import SourceFactory
from tests.ingestion.connectors.conftest import changed_events, settled
from tests.ingestion.connectors.websites import (
    Answer,
    gzipped,
    html_page,
    sitemap_index_xml,
    sitemap_xml,
)


def sitemap_source(url: str, **config) -> Source:
    return SourceFactory(kind=Source.Kind.SITEMAP, config=config_clean("sitemap", {"url": url, **config}))


def test_an_index_of_plain_and_gzipped_sitemaps_lists_every_page_with_its_lastmod(website):
    website.page("/sitemap.xml", sitemap_index_xml([website.url("/docs.xml"), website.url("/blog.xml.gz"),
                                                    website.url("/news-sitemap")]),
                 content_type="application/xml")
    website.page("/news-sitemap", gzipped(sitemap_xml([(website.url("/news/1"), "")])),
                 content_type="application/octet-stream")  # gzip under neither name nor type
    website.page("/docs.xml", sitemap_xml([(website.url("/docs/a"), "2026-01-02"), (website.url("/docs/b"), "")]),
                 content_type="application/xml")
    website.page("/blog.xml.gz", gzipped(sitemap_xml([(website.url("/blog/1"), "2026-03-04T05:06:07+00:00")])),
                 content_type="application/gzip")
    pages = sitemap_pages(website.url("/sitemap.xml"))
    assert pages == {website.url("/docs/a"): "2026-01-02T00:00:00", website.url("/docs/b"): "",
                     website.url("/blog/1"): "2026-03-04T05:06:07+00:00", website.url("/news/1"): ""}


@pytest.mark.django_db
def test_include_and_exclude_take_globs_and_regular_expressions(website):
    pages = [(website.url(p), "") for p in ("/docs/a", "/docs/old/b", "/blog/c", "/docs/d.pdf")]
    website.page("/s.xml", sitemap_xml(pages), content_type="text/xml")
    source = sitemap_source(website.url("/s.xml"), include=[website.url("/docs/*")], exclude=["re:/old/|\\.pdf$"])
    assert [item.external_id for item in connector_for("sitemap").items(source)] == [website.url("/docs/a")]


def test_malformed_or_unreachable_sitemaps_are_refused_whole(website, settings):
    settings.WEB_RETRIES = 0
    website.page("/bad.xml", '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                             "<url><loc>http://x/a</loc></url><url><loc>http://x/b", content_type="application/xml")
    with pytest.raises(SourceUnavailable, match="not well-formed XML"):
        sitemap_pages(website.url("/bad.xml"))
    # One broken child of an index: nothing is listed (its pages would otherwise be pruned).
    website.page("/good.xml", sitemap_xml([(website.url("/ok"), "")]), content_type="application/xml")
    website.page("/index.xml", sitemap_index_xml([website.url("/good.xml"), website.url("/bad.xml")]))
    with pytest.raises(SourceUnavailable, match="bad.xml is not well-formed XML"):
        sitemap_pages(website.url("/index.xml"))
    website.answer("/down.xml", Answer(503, b"down"))
    with pytest.raises(SourceUnavailable, match="answered 503"):
        sitemap_pages(website.url("/down.xml"))


def test_bad_configurations_are_refused_with_a_message():
    with pytest.raises(ConfigInvalid, match="config.url: is required"):
        config_clean("sitemap", {"include": ["*"]})
    with pytest.raises(ConfigInvalid, match="link-local"):
        config_clean("sitemap", {"url": "http://169.254.169.254/sitemap.xml"})
    with pytest.raises(ConfigInvalid, match="is not a regular expression"):
        config_clean("sitemap", {"url": "https://example.org/s.xml", "exclude": ["re:(unclosed"]})
    with pytest.raises(ConfigInvalid, match="must be a list of URL patterns"):
        config_clean("sitemap", {"url": "https://example.org/s.xml", "include": [3]})
    with pytest.raises(ConfigInvalid, match="unknown key"):
        config_clean("sitemap", {"url": "https://example.org/s.xml", "depth": 3})


def _serve_site(website, pages: dict[str, tuple[str, str]]) -> None:
    """pages: path -> (lastmod, text)."""
    for path, (_, text) in pages.items():
        website.page(path, html_page(path.strip("/").title(), text))
    website.page("/sitemap.xml", sitemap_xml([(website.url(p), lastmod) for p, (lastmod, _) in pages.items()]),
                 content_type="application/xml")


@pytest.mark.worker
def test_a_sitemap_source_syncs_end_to_end(worker, website):
    pages = {f"/guide/{n}": ("2026-01-01", f"Chapter {n} explains how the pump station zk{n} is serviced in winter.")
             for n in range(3)}
    _serve_site(website, pages)
    source = sitemap_source(website.url("/sitemap.xml"))

    # The first sync through the `sync` queue's tasks: the worker lists and fetches.
    run = sync.source_sync_request(source, trigger="test")
    run = wait_for(lambda: SyncRun.objects.exclude(status="running").filter(pk=run.pk).first(), timeout=90,
                   message="the sync run to finish")
    assert (run.status, run.items_seen, run.items_new) == ("succeeded", 3, 3)
    documents = settled(source, count=3)
    assert {d.marker for d in documents} == {"2026-01-01T00:00:00"}
    runs = changed_events(source)
    assert runs == 3

    page_hits = sum(website.hits[p] for p in pages)
    again = sync.source_sync(source, trigger="test")
    assert (again.status, again.items_unchanged, again.items_new, again.items_changed) == ("succeeded", 3, 0, 0)
    assert changed_events(source) == runs
    assert sum(website.hits[p] for p in pages) == page_hits  # same lastmod: not even fetched

    pages["/guide/1"] = ("2026-02-01", "Chapter 1 now says the pump station zk1 is serviced each spring.")
    del pages["/guide/2"]
    _serve_site(website, pages)
    changed = sync.source_sync(source, trigger="test")
    assert (changed.items_changed, changed.items_unchanged, changed.items_deleted) == (1, 1, 1)
    documents = settled(source, count=2)
    assert {d.external_id for d in documents} == {website.url("/guide/0"), website.url("/guide/1")}
    hits = retrieve("pump station zk1 serviced spring", access=AccessFilter(), k=3, mode="bm25")
    assert hits and "spring" in hits[0].text
    assert all("zk2" not in hit.text for hit in retrieve("pump station zk2", access=AccessFilter(), k=5, mode="bm25"))


@pytest.mark.django_db
def test_each_fault_is_recorded_on_the_sync_run_and_another_source_is_unaffected(website, settings):
    settings.WEB_TIMEOUT = 1
    settings.WEB_RETRIES = 1
    settings.SYNC_ITEM_RETRIES = 0
    website.robots("User-agent: Freshet\nDisallow: /private/\n")
    website.page("/fine", html_page("Fine", "All is well with this page about the fjord ferry timetable."))
    website.answer("/busy", Answer(429, b"", headers={"Retry-After": "1"}),
                   Answer(body=html_page("Busy", "x").encode()))
    website.answer("/broken", Answer(500, b"oops"))
    website.page("/slow", b"s" * 400, trickle=0.1)
    website.redirect("/loop", "/loop2")
    website.redirect("/loop2", "/loop")
    website.redirect("/cloud", "http://169.254.169.254/latest/meta-data/")
    faults = ["/busy", "/broken", "/slow", "/loop", "/cloud", "/private/x", "/gone"]
    website.page("/sitemap.xml", sitemap_xml([(website.url(p), "") for p in ["/fine", *faults]]),
                 content_type="application/xml")
    faulty = sitemap_source(website.url("/sitemap.xml"))

    run = sync.source_sync(faulty, trigger="test")
    assert (run.status, run.items_seen, run.items_new, run.items_failed) == ("partial", 8, 2, 6)
    expected = {
        "/broken": "answered 500 (2 tries)", "/slow": "longer than 1 s", "/loop": "redirects in a loop",
        "/cloud": "169.254.169.254 is a link-local", "/private/x": "robots.txt", "/gone": "answered 404",
    }
    for path, message in expected.items():
        line = next((line for line in run.error.splitlines() if line.startswith(website.url(path) + ":")), "")
        assert message in line, (path, run.error)
    assert set(faulty.documents.values_list("external_id", flat=True)) == {website.url("/fine"), website.url("/busy")}

    website.page("/other.xml", sitemap_xml([(website.url("/fine"), "")]), content_type="application/xml")
    other = sync.source_sync(sitemap_source(website.url("/other.xml")), trigger="test")
    assert (other.status, other.items_new, other.items_failed) == ("succeeded", 1, 0)

    website.page("/sitemap.xml", b"<urlset><url><loc>", content_type="application/xml")
    broken = sync.source_sync(faulty, trigger="test")
    assert broken.status == "failed" and "not well-formed XML" in broken.error and "nothing was pruned" in broken.error
    assert faulty.documents.count() == 2
