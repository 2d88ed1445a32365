"""Turn a document's bytes into text. The type is detected from the content, the name only
breaks ties between plain-text flavours. Every failure is a ParseError with a reason a person
can act on; nothing else escapes."""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass

import charset_normalizer

from ingestion import parse_limits


class ParseError(Exception):
    """The document cannot be turned into text; the message says why."""


@dataclass(frozen=True)
class Parsed:
    media_type: str
    text: str
    title: str = ""


PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
SUPPORTED = (TEXT, MARKDOWN, HTML, PDF, DOCX)

_BINARY_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"\x7fELF": "an executable",
    b"MZ": "a Windows executable",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"\xd0\xcf\x11\xe0": "a legacy Office file (.doc/.xls); save it as .docx or PDF",
}
_MARKDOWN_NAMES = (".md", ".markdown", ".mdown")
_HTML_NAMES = (".html", ".htm", ".xhtml")


def detect(content: bytes, filename: str = "") -> str:
    """The media type of `content`, or ParseError naming what it is when unsupported."""
    if not content:
        raise ParseError("The file is empty.")
    head = content[:8]
    if content.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                if "word/document.xml" in archive.namelist():
                    return DOCX
        except zipfile.BadZipFile:
            raise ParseError("The file looks like a ZIP/DOCX archive but is corrupt.") from None
        raise ParseError("Unsupported type: a ZIP archive (only .docx archives are read).")
    for signature, what in _BINARY_SIGNATURES.items():
        if content.startswith(signature):
            raise ParseError(f"Unsupported type: {what}.")
    text = decode_text(content)
    name = filename.lower()
    sniff = text[:1024].lstrip().lower()
    if name.endswith(_HTML_NAMES) or sniff.startswith(("<!doctype html", "<html")) or (
        "<html" in sniff and "</" in text[:4096].lower()
    ):
        return HTML
    if name.endswith(_MARKDOWN_NAMES):
        return MARKDOWN
    return TEXT


def decode_text(content: bytes) -> str:
    """Decode text in whatever encoding it came: BOMs first, then UTF-8, then UTF-16 without a
    BOM, then the best guess (Latin-1/Windows-1252 and friends). Binary junk is refused."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16"), (codecs.BOM_UTF32_LE, "utf-32")):
        if content.startswith(bom):
            return _checked(content.decode(encoding, errors="replace"))
    try:
        return _checked(content.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    sample = content[:4096]
    if len(sample) >= 4:
        even_nuls = sample[0::2].count(0) / len(sample[0::2])
        odd_nuls = sample[1::2].count(0) / len(sample[1::2])
        if odd_nuls > 0.3 and even_nuls < 0.05:
            return _checked(content.decode("utf-16-le", errors="replace"))
        if even_nuls > 0.3 and odd_nuls < 0.05:
            return _checked(content.decode("utf-16-be", errors="replace"))
    if b"\x00" in sample:
        raise ParseError("Unsupported type: binary content that is not text, PDF or DOCX.")
    # Not UTF-8: Windows-1252 (a superset of Latin-1's printable range) is by far the most
    # common legacy encoding; guessers mistake short Latin-1 texts for Central European pages.
    try:
        return _checked(content.decode("cp1252"))
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(content).best()
    return _checked(content.decode(best.encoding if best is not None else "latin-1", errors="replace"))


def _checked(text: str) -> str:
    sample = text[:20000]
    if not sample:
        return text
    junk = sum(1 for ch in sample if ch == "\ufffd" or (
        unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\t\n\r\f\v"))
    if junk / len(sample) > 0.05:
        raise ParseError("Unsupported type: binary content that is not text, PDF or DOCX.")
    return text


def parse(content: bytes, filename: str = "") -> Parsed:
    media_type = detect(content, filename)
    try:  # within the limits of ingestion/parse_limits.py: a file past one fails alone
        with parse_limits.parse_limits():
            if media_type == PDF:
                parsed = _parse_pdf(content)
            elif media_type == DOCX:
                parse_limits.archive_check(content)
                parsed = _parse_docx(content)
            elif media_type == HTML:
                parsed = _parse_html(decode_text(content))
            else:
                text = decode_text(content)
                parsed = Parsed(media_type, text, _first_heading(text) if media_type == MARKDOWN else "")
            text = _normalise(parsed.text)
            parse_limits.text_check(text)
    except parse_limits.LimitExceeded as error:
        raise ParseError(str(error)) from None
    if not text:
        raise ParseError(_EMPTY_REASON.get(parsed.media_type, "The document contains no text."))
    return Parsed(parsed.media_type, text, parsed.title.strip()[:500])


_EMPTY_REASON = {
    PDF: "The PDF has no extractable text (a scanned PDF needs OCR first).",
    HTML: "The page has no visible text.",
}


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\v]+\n", "\n", text)  # not \f: PDF_PAGE_BREAK marks a PDF's pages
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _first_heading(text: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1) if match else ""


def _parse_pdf(content: bytes) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            try:
                reader.decrypt("")
            except Exception:
                raise ParseError("The PDF is encrypted with a password.") from None
        parse_limits.pdf_pages_check(reader)
        pages = [_normalise(page.extract_text() or "") for page in reader.pages]
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title).strip()
        title = title or _heading_like(pages)
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as error:
        raise ParseError(f"The PDF is corrupt or unreadable ({type(error).__name__}: {error}).") from None
    return Parsed(PDF, ("\n\n" + PDF_PAGE_BREAK).join(pages), title)


# Pages of a PDF's text are separated by a form feed (as pdftotext does), so a position in the
# text names its page (chat/passages.py); whitespace to everything else.
PDF_PAGE_BREAK = "\f"


def _heading_like(pages: list[str]) -> str:
    """A PDF's first heading-like line: short, with letters, not a sentence or a page number."""
    for page in pages[:2]:
        for line in page.splitlines()[:15]:
            line = " ".join(line.split())
            words = line.split()
            if (1 <= len(words) <= 15 and len(line) <= 200 and sum(ch.isalpha() for ch in line) >= 3
                    and not line.endswith((".", ",", ";")) and not line[:1].islower()):
                return line
    return ""


def _parse_docx(content: bytes) -> Parsed:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(content))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ParseError(f"The DOCX file is corrupt or unreadable ({error}).") from None
    except Exception as error:  # lxml and friends raise their own kinds on broken XML
        raise ParseError(f"The DOCX file is corrupt or unreadable ({type(error).__name__}).") from None
    blocks = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells if cell.text.strip()]
            if cells:
                blocks.append(" | ".join(cells))
    return Parsed(DOCX, "\n\n".join(blocks), (document.core_properties.title or "").strip()
                  or _docx_heading(document))


def _docx_heading(document) -> str:
    """A DOCX's first paragraph styled Title or Heading N, else ""."""
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if paragraph.text.strip() and (style == "Title" or style.startswith("Heading")):
            return " ".join(paragraph.text.split())
    return ""


def _parse_html(markup: str) -> Parsed:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    body = soup.body or soup
    text = body.get_text("\n", strip=True)
    return Parsed(HTML, text, title)
