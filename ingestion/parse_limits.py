"""Limits a parser runs within, so that one hostile or broken file fails alone and the worker
goes on with the next document:

- archives (a DOCX is a zip): the members' count, their declared uncompressed sizes and
  compression ratios, and then the bytes they really inflate to (a zip may lie about its sizes),
  all checked before python-docx opens it;
- PDF: the page count, read before any text is extracted;
- every document: a time limit (a SIGALRM timer, in the main thread only: a Celery pool process
  runs its tasks there), a memory limit (the address space may grow by so much while the parser
  runs: RLIMIT_AS lowered for the call and put back after), and the size of the text it yields.

A limit exceeded is `LimitExceeded`, whose message says which and by how much; ingestion/parsers.py
turns it into the document's ParseError. It derives from BaseException on purpose: the parsers
catch `Exception` from the libraries they call (broken XML raises many kinds), and a limit must
not read as "the file is corrupt".
"""

from __future__ import annotations

import contextlib
import io
import resource
import signal
import threading
import zipfile
from collections.abc import Iterator

from django.conf import settings

MIB = 1 << 20
# Below this size a member's compression ratio does not matter: it cannot inflate to much.
RATIO_MIN_BYTES = MIB
READ_CHUNK = 1 << 16


class LimitExceeded(BaseException):  # noqa: N818 (named for what happened, like SoftTimeLimitExceeded)
    """A parser went past one of its limits; the message says which."""


# --- archives -------------------------------------------------------------------------------
def archive_check(content: bytes, *, what: str = "The DOCX file") -> None:
    """Refuse a zip whose members are too many, claim too much, inflate too far, or really
    inflate to more than PARSE_MAX_UNCOMPRESSED_BYTES in all; before anything opens it."""
    total_cap, ratio_cap = settings.PARSE_MAX_UNCOMPRESSED_BYTES, settings.PARSE_MAX_COMPRESSION_RATIO
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        return  # not an archive after all: the parser reports it as corrupt
    with archive:
        members = archive.infolist()
        if len(members) > settings.PARSE_MAX_ARCHIVE_MEMBERS:
            raise LimitExceeded(f"{what} holds {len(members)} files, more than the "
                                f"{settings.PARSE_MAX_ARCHIVE_MEMBERS} allowed (PARSE_MAX_ARCHIVE_MEMBERS).")
        declared = sum(member.file_size for member in members)
        if declared > total_cap:
            raise LimitExceeded(f"{what} would unpack to {declared / MIB:.0f} MiB, more than the "
                                f"{total_cap / MIB:.0f} MiB allowed (PARSE_MAX_UNCOMPRESSED_BYTES): "
                                "a decompression bomb, or too large to read.")
        for member in members:
            if member.file_size >= RATIO_MIN_BYTES and member.file_size > ratio_cap * max(member.compress_size, 1):
                ratio = member.file_size / max(member.compress_size, 1)
                raise LimitExceeded(f"{what}'s member {member.filename} inflates {ratio:.0f} times, more than "
                                    f"the {ratio_cap} allowed (PARSE_MAX_COMPRESSION_RATIO): a decompression bomb.")
        # The sizes above are what the archive claims; count what really comes out.
        inflated = 0
        for member in members:
            try:
                with archive.open(member) as stream:
                    while block := stream.read(READ_CHUNK):
                        inflated += len(block)
                        if inflated > total_cap:
                            raise LimitExceeded(
                                f"{what} unpacks to more than the {total_cap / MIB:.0f} MiB allowed "
                                "(PARSE_MAX_UNCOMPRESSED_BYTES), more than it claims: a decompression bomb.")
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
                return  # a broken member: the parser reports the file as corrupt


# --- PDF ------------------------------------------------------------------------------------
def pdf_pages_check(reader) -> None:
    """Refuse a PDF (a pypdf reader) with more pages than PARSE_MAX_PDF_PAGES."""
    pages = len(reader.pages)
    if pages > settings.PARSE_MAX_PDF_PAGES:
        raise LimitExceeded(f"The PDF has {pages} pages, more than the {settings.PARSE_MAX_PDF_PAGES} allowed "
                            "(PARSE_MAX_PDF_PAGES).")


# --- time, memory, output -----------------------------------------------------------------------
def _on_alarm(signum, frame) -> None:
    raise LimitExceeded(f"Parsing took longer than {settings.PARSE_TIME_LIMIT_SECONDS:g} s "
                        "(PARSE_TIME_LIMIT_SECONDS): the file is too complex to read.")


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; the task's own time limit still holds
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    # Fires again every quarter second after the limit: an exception raised inside a gc callback
    # or a __del__ is swallowed (seen here with pypdf), and a parser may catch broadly.
    earlier, _ = signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:
            signal.setitimer(signal.ITIMER_REAL, earlier)  # someone else's timer, given back


def _address_space() -> int:
    """This process's address space in bytes (Linux), or 0 when it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def _memory_limit(budget: int) -> Iterator[None]:
    used = _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if budget <= 0 or not used:
        yield
        return
    limit = used + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield  # already tighter than ours
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    except MemoryError:
        raise LimitExceeded(f"Parsing needed more than {budget / MIB:.0f} MiB of memory "
                            "(PARSE_MEMORY_LIMIT_MB): the file is too large or too complex to read.") from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def parse_limits() -> Iterator[None]:
    """Run the block (one document's parse) within PARSE_TIME_LIMIT_SECONDS and
    PARSE_MEMORY_LIMIT_MB; LimitExceeded when it goes past either."""
    with _time_limit(settings.PARSE_TIME_LIMIT_SECONDS), _memory_limit(settings.PARSE_MEMORY_LIMIT_MB * MIB):
        yield


def text_check(text: str) -> None:
    """Refuse text longer than PARSE_MAX_TEXT_CHARACTERS (it would be chunked and embedded)."""
    if len(text) > settings.PARSE_MAX_TEXT_CHARACTERS:
        raise LimitExceeded(f"The document yields {len(text):,} characters of text, more than the "
                            f"{settings.PARSE_MAX_TEXT_CHARACTERS:,} allowed (PARSE_MAX_TEXT_CHARACTERS).")
