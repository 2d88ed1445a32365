"""Hostile files, built in memory: a decompression bomb disguised as a DOCX, PDFs that are
pathological by page count or by the work their text takes."""

from __future__ import annotations

import io
import zipfile
import zlib

from tests.samples import docx_bytes, pdf_document

MIB = 1 << 20


def docx_bomb(*, inflated_mib: int = 300) -> bytes:
    """A genuine DOCX with one more member: `inflated_mib` MiB of zeros that deflate to about a
    thousandth of that."""
    out = io.BytesIO(docx_bytes(["An innocent looking report."]))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("word/media/image1.bin", "w", force_zip64=True) as member:
            block = bytes(MIB)
            for _ in range(inflated_mib):
                member.write(block)
    return out.getvalue()


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def pdf_many_pages(pages: int) -> bytes:
    """A valid PDF of `pages` pages, all showing one small content stream."""
    first_page = 5
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages)).encode()
    stream = b"BT /F1 12 Tf 72 720 Td (A page.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(pages).encode() + b" >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        _FONT,
    ]
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
            b"/Resources << /Font << /F1 4 0 R >> >> >>")
    return pdf_document(objects + [page] * pages)


def pdf_endless_text(operations: int = 300_000, pages: int = 40) -> bytes:
    """A PDF of `pages` pages sharing one content stream (a few dozen KiB deflated) of
    `operations` text operators: extracting its text keeps a parser busy for minutes. Each stream
    (5 tokens an operator) stays under pypdf's own budget of 2,000,000 tokens per stream, so it is Freshet's time limit
    that stops it, not pypdf's."""
    stream = zlib.compress(b"BT /F1 1 Tf " + b"(a) Tj 0 1 Td " * operations + b"ET", 9)
    first_page = 5
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(pages).encode() + b" >>",
        b"<< /Length " + str(len(stream)).encode() + b" /Filter /FlateDecode >>\nstream\n" + stream + b"\nendstream",
        _FONT,
    ]
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
            b"/Resources << /Font << /F1 4 0 R >> >> >>")
    return pdf_document(objects + [page] * pages)
