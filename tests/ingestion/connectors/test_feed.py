"""The `feed` kind: RSS and Atom through feedparser, an entry's guid as its id, its own content or
its linked page; end to end through syncs with a real worker."""

from __future__ import annotations

import pytest

from chat.retrieval import retrieve
from ingestion.connectors import ConfigInvalid, SourceUnavailable, config_clean, connector_for, sync
from ingestion.connectors.feed import feed_entries
from ingestion.models import Source
from ingestion.search_index import AccessFilter
from tests.factories import SourceFactory
from tests.ingestion.connectors.conftest import changed_events, settled
from tests.ingestion.connectors.websites import atom_xml, html_page, rss_xml


def feed_source(url: str, **config) -> Source:
    return SourceFactory(kind=Source.Kind.FEED, config=config_clean("feed", {"url": url, **config}))


def rss_entries(n: int, *, tag: str = "") -> list[dict[str, str]]:
    return [{"guid": f"urn:news:{i}", "title": f"Bulletin {i}", "link": f"http://example.org/news/{i}",
             "description": f"The harbour crane qv{i} will be inspected on day {i}{tag}."} for i in range(n)]


@pytest.mark.django_db
def test_rss_entries_are_listed_by_guid_and_fetched_from_the_feed(website):
    website.page("/rss", rss_xml(rss_entries(2)), content_type="application/rss+xml")
    source = feed_source(website.url("/rss"))
    connector = connector_for("feed")
    items = list(connector.items(source))
    assert [(i.external_id, i.title, i.uri) for i in items] == [
        ("urn:news:0", "Bulletin 0", "http://example.org/news/0"), ("urn:news:1", "Bulletin 1", "http://example.org/news/1")]
    assert all(i.marker.startswith("sha256:") for i in items)
    fetched = connector.fetch(source, items[1])
    assert b"harbour crane qv1" in fetched.content and fetched.title == "Bulletin 1"
    assert website.hits["/rss"] == 1  # the entry came from the listing's copy


@pytest.mark.django_db
def test_link_mode_indexes_the_page_an_atom_entry_links_to(website):
    website.page("/story", html_page("Story", "The linked story tells how the lighthouse keeper retired."))
    website.page("/atom", atom_xml([{"id": "tag:acme,2026:1", "title": "Story", "link": website.url("/story"),
                                     "updated": "2026-05-01T10:00:00Z", "content": "<p>Teaser only</p>"}]),
                 content_type="application/atom+xml")
    source = feed_source(website.url("/atom"), content="link")
    [item] = connector_for("feed").items(source)
    assert (item.external_id, item.marker, item.uri) == \
        ("tag:acme,2026:1", "2026-05-01T10:00:00Z", website.url("/story"))
    fetched = connector_for("feed").fetch(source, item)
    assert b"lighthouse keeper retired" in fetched.content and b"Teaser" not in fetched.content


def test_what_is_not_a_feed_is_refused(website):
    website.page("/broken", '<?xml version="1.0"?><rss version="2.0"><channel><item><title>a</title></item><item>',
                 content_type="application/rss+xml")
    with pytest.raises(SourceUnavailable, match="cannot be read"):
        feed_entries(website.url("/broken"), fresh=True)
    website.page("/html", html_page("Not a feed", "Just a page."))
    with pytest.raises(SourceUnavailable, match="cannot be read"):
        feed_entries(website.url("/html"), fresh=True)
    with pytest.raises(SourceUnavailable, match="answered 404"):
        feed_entries(website.url("/missing"), fresh=True)


def test_bad_configurations_are_refused_with_a_message():
    with pytest.raises(ConfigInvalid, match="config.content: must be \"entry\""):
        config_clean("feed", {"url": "https://example.org/rss", "content": "everything"})
    with pytest.raises(ConfigInvalid, match="Only http and https"):
        config_clean("feed", {"url": "ftp://example.org/rss"})
    assert config_clean("feed", {"url": "https://example.org/rss"})["content"] == "entry"


@pytest.mark.worker
def test_a_feed_source_syncs_end_to_end(worker, website):
    entries = rss_entries(3)
    website.page("/rss", rss_xml(entries), content_type="application/rss+xml")
    source = feed_source(website.url("/rss"))

    run = sync.source_sync(source, trigger="test")
    assert (run.status, run.items_new) == ("succeeded", 3)
    settled(source, count=3)
    runs = changed_events(source)

    again = sync.source_sync(source, trigger="test")
    assert (again.items_unchanged, again.items_changed, again.items_new) == (3, 0, 0)
    assert changed_events(source) == runs

    entries[0]["description"] = "The harbour crane qv0 inspection moved to the night shift."
    website.page("/rss", rss_xml(entries[:2]), content_type="application/rss+xml")
    changed = sync.source_sync(source, trigger="test")
    assert (changed.items_changed, changed.items_unchanged, changed.items_deleted) == (1, 1, 1)
    settled(source, count=2)
    hits = retrieve("harbour crane qv0 night shift", access=AccessFilter(), k=3, mode="bm25")
    assert hits and "night shift" in hits[0].text
    assert set(source.documents.values_list("external_id", flat=True)) == {"urn:news:0", "urn:news:1"}

    website.page("/rss", rss_xml(entries[:1])[:-40], content_type="application/rss+xml")  # cut short
    broken = sync.source_sync(source, trigger="test")
    assert broken.status == "failed" and "cannot be read" in broken.error
    assert source.documents.count() == 2  # a feed that cannot be read prunes nothing
