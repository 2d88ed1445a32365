"""Parsers run within limits (ingestion/parse_limits.py): a file past one fails alone, with the
reason, quickly, and the next file parses as before."""

from __future__ import annotations

import pytest

from ingestion import parse_limits
from ingestion.parsers import ParseError, parse
from tests.reliability.hostile import docx_bomb, pdf_endless_text, pdf_many_pages
from tests.samples import docx_bytes, pdf_bytes


def test_it_refuses_a_decompression_bomb_disguised_as_a_docx_before_opening_it():
    bomb = docx_bomb(inflated_mib=300)
    assert len(bomb) < 2 * parse_limits.MIB

    with pytest.raises(ParseError, match="would unpack to 30[01] MiB.*decompression bomb"):
        parse(bomb, "report.docx")  # refused on the declared sizes, before anything inflates

    assert "harmless" in parse(docx_bytes(["A harmless report."]), "ok.docx").text


def test_it_refuses_a_docx_that_inflates_far_on_its_ratio_alone(settings):
    settings.PARSE_MAX_UNCOMPRESSED_BYTES = 10 << 30  # the total would pass: the ratio does not
    with pytest.raises(ParseError, match="inflates .* times.*PARSE_MAX_COMPRESSION_RATIO"):
        parse(docx_bomb(inflated_mib=20), "report.docx")


def test_it_refuses_a_pdf_with_too_many_pages(settings):
    settings.PARSE_MAX_PDF_PAGES = 500
    with pytest.raises(ParseError, match="2000 pages, more than the 500 allowed"):
        parse(pdf_many_pages(2000), "many.pdf")
    assert "A page." in parse(pdf_many_pages(3), "few.pdf").text


def test_a_pdf_that_takes_too_long_fails_within_the_time_limit(settings):
    settings.PARSE_TIME_LIMIT_SECONDS = 1.0
    with pytest.raises(ParseError, match="took longer than 1 s"):
        parse(pdf_endless_text(), "endless.pdf")
    # The timer is gone: the next parse runs to its end.
    assert "still" in parse(pdf_bytes(["The next document is still read."]), "next.pdf").text


def test_a_parse_that_needs_too_much_memory_fails_and_the_limit_is_lifted_after(settings):
    settings.PARSE_MEMORY_LIMIT_MB = 64
    with pytest.raises(parse_limits.LimitExceeded, match="more than 64 MiB of memory"):
        with parse_limits.parse_limits():
            bytearray(512 * parse_limits.MIB)
    assert len(bytearray(512 * parse_limits.MIB)) == 512 * parse_limits.MIB


def test_it_refuses_a_document_with_too_much_text(settings):
    settings.PARSE_MAX_TEXT_CHARACTERS = 1000
    with pytest.raises(ParseError, match="more than the 1,000 allowed"):
        parse(("word " * 1000).encode(), "long.txt")
