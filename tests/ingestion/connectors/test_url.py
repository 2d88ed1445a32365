"""The `url` kind: one page, its main text (no navigation), conditional re-fetches, and end to end
through a sync with a real worker."""

from __future__ import annotations

import pytest

from chat.retrieval import retrieve
from ingestion.connectors import ConfigInvalid, config_clean, connector_for, sync
from ingestion.connectors.url import page_fetched
from ingestion.models import Document, Source
from ingestion.search_index import AccessFilter
from tests.factories import SourceFactory
from tests.ingestion.connectors.conftest import changed_events, settled
from tests.ingestion.connectors.websites import html_page
from tests.samples import pdf_bytes

TEXT = "The night tariff applies from ten in the evening to six in the morning and costs {} cents per kWh."


def url_source(url: str) -> Source:
    return SourceFactory(kind=Source.Kind.URL, config=config_clean("url", {"url": url}))


def test_a_page_becomes_its_main_text_without_navigation_and_with_its_title(website):
    website.page("/tariffs", html_page("Night tariffs", TEXT.format(12), "Weekends are cheaper still."), etag='"t1"')
    fetched = page_fetched(website.url("/tariffs"))
    text = fetched.content.decode()
    assert text.startswith("# Night tariffs\n")
    assert "costs 12 cents per kWh" in text and "Weekends are cheaper" in text
    for chrome in ("About us", "Menu one", "Copyright"):
        assert chrome not in text
    assert (fetched.title, fetched.filename, fetched.marker) == ("Night tariffs", "tariffs.md", '"t1"')
    assert fetched.metadata["etag"] == '"t1"'


def test_a_pdf_or_other_file_is_stored_as_it_came_for_the_parsers(website):
    pdf = pdf_bytes(["Glaciers retreat in warm summers."])
    website.page("/report.pdf", pdf, content_type="application/pdf")
    fetched = page_fetched(website.url("/report.pdf"))
    assert (fetched.content, fetched.filename) == (pdf, "report.pdf")


@pytest.mark.django_db
def test_a_refetch_is_conditional_and_identical_bytes_count_as_not_modified(website):
    source = url_source(website.url("/p"))
    website.page("/p", html_page("P", TEXT.format(1)), etag='"e1"')
    fetched = page_fetched(website.url("/p"))
    document = Document.objects.create(source=source, external_id=website.url("/p"), marker=fetched.marker,
                                       metadata=fetched.metadata, content_hash="x", status=Document.Status.INDEXED)
    assert page_fetched(website.url("/p"), document=document).content is None  # a 304
    assert website.requests[-1][1]["If-None-Match"] == '"e1"'
    website.page("/p", html_page("P", TEXT.format(1)))  # no validators now: the same bytes
    assert page_fetched(website.url("/p"), document=document).content is None
    website.page("/p", html_page("P", TEXT.format(2)))
    assert b"costs 2 cents" in page_fetched(website.url("/p"), document=document).content


def test_bad_configurations_are_refused_with_a_message():
    cases = {
        "is required": {},
        "Only http and https": {"url": "file:///etc/passwd"},
        "link-local, metadata": {"url": "http://169.254.169.254/latest/meta-data/"},
        "unknown key": {"url": "https://example.org/", "depth": 2},
    }
    for message, config in cases.items():
        with pytest.raises(ConfigInvalid, match=message):
            config_clean("url", config)
    assert config_clean("url", {"url": " https://example.org/a "}) == {"url": "https://example.org/a"}
    assert connector_for("url").syncs


@pytest.mark.worker
def test_a_url_source_syncs_end_to_end(worker, website):
    website.page("/rates", html_page("Rates", TEXT.format("17qx")), etag='"r1"')
    source = url_source(website.url("/rates"))

    run = sync.source_sync(source, trigger="test")
    assert (run.status, run.items_new) == ("succeeded", 1)
    [document] = settled(source, count=1)
    assert document.title == "Rates" and "Menu one" not in document.text
    hits = retrieve("night tariff 17qx cents", access=AccessFilter(), k=3, mode="bm25")
    assert hits and hits[0].document_id == document.pk
    runs = changed_events(source)

    again = sync.source_sync(source, trigger="test")
    assert (again.status, again.items_unchanged) == ("succeeded", 1)
    assert changed_events(source) == runs
    assert website.requests[-1][1].get("If-None-Match") == '"r1"'

    website.page("/rates", html_page("Rates", TEXT.format("23qx")), etag='"r2"')
    changed = sync.source_sync(source, trigger="test")
    assert changed.items_changed == 1
    document = settled(source, count=1)[0]
    assert "23qx" in document.text

    website.remove("/rates")
    gone = sync.source_sync(source, trigger="test")
    assert (gone.status, gone.items_failed) == ("partial", 1) and "answered 404" in gone.error
    assert source.documents.count() == 1  # a page that fails is not a page removed
