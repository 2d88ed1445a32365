import os

import pytest

from ingestion.parsers import DOCX, HTML, MARKDOWN, PDF, TEXT, ParseError, decode_text, detect, parse
from tests.samples import PNG_BYTES, docx_bytes, pdf_bytes


def test_it_reads_text_from_a_pdf():
    parsed = parse(pdf_bytes(["Glaciers retreat faster in warm summers.", "Second line here."]), "x.bin")
    assert parsed.media_type == PDF
    assert "Glaciers retreat faster" in parsed.text
    assert "Second line" in parsed.text


def test_it_reads_paragraphs_and_title_from_a_docx():
    parsed = parse(docx_bytes(["Quarterly revenue grew.", "Costs fell."], title="Q3 report"), "report")
    assert parsed.media_type == DOCX
    assert parsed.text == "Quarterly revenue grew.\n\nCosts fell."
    assert parsed.title == "Q3 report"


def test_it_detects_html_from_content_and_drops_scripts():
    markup = b"<!DOCTYPE html><html><head><title>Pricing</title><script>var x=1;</script></head>" \
             b"<body><h1>Plans</h1><p>Gold costs 10 euros.</p></body></html>"
    parsed = parse(markup, "page.txt")
    assert parsed.media_type == HTML
    assert parsed.title == "Pricing"
    assert "Gold costs 10 euros." in parsed.text
    assert "var x" not in parsed.text


def test_it_takes_the_markdown_title_from_the_first_heading():
    parsed = parse(b"# Runbook\n\nRestart the service.", "runbook.md")
    assert (parsed.media_type, parsed.title) == (MARKDOWN, "Runbook")


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-8-sig"])
def test_it_decodes_legacy_and_utf16_text(encoding):
    text = "Crème brûlée for the naïve café owner. Ångström façade."
    assert decode_text(text.encode(encoding)) == text


def test_a_pdf_named_txt_is_still_a_pdf():
    assert detect(pdf_bytes(["x"]), "notes.txt") == PDF
    assert detect(b"plain words", "notes.txt") == TEXT


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (PNG_BYTES, "PNG image"),
        (os.urandom(4096), "binary content"),
        (b"%PDF-1.4\n1 0 obj broken", "PDF is corrupt"),
        (b"PK\x03\x04 not really a zip", "corrupt"),
        (b"   \n\n  ", "no text"),
    ],
)
def test_bad_input_raises_a_readable_reason(content, reason):
    with pytest.raises(ParseError) as error:
        parse(content, "upload")
    assert reason in str(error.value)
