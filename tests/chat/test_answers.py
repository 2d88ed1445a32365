"""Answers people can trust: whole sentences from the document's text, abstention when nothing
retrieved answers (both modes), citations that open a document page, PDF pages and titles."""

from __future__ import annotations

import io
import re

import pytest
from django.test import override_settings

from chat.extractive import abstention_text, extractive_answer, model_declined
from chat.models import Message
from chat.passages import passages_from_hits
from chat.text import text_units
from ingestion.chunking import chunks_split
from ingestion.embedding import embedder
from ingestion.parsers import parse
from ingestion.search_index import SearchHit
from ingestion.services import document_ingest
from tests.chat.conftest import settled
from tests.chat.test_generation import fake_llm  # noqa: F401  (the OpenAI-compatible server for faults)
from tests.conftest import client_for
from tests.factories import SourceFactory, UserFactory
from tests.samples import docx_bytes, pdf_document

FJORDS = """# Fjords of the north

Sills
Many fjords have a shallow sill at their mouth, left by the glacier that carved them. The sill
limits the exchange of water with the open sea. Deep water behind a sill can stay cold for years.

Depth
The Sognefjord runs 205 kilometres inland, reaching a depth of 1,308 metres. Its walls rise
a thousand metres above the water. Ferries cross it at a dozen points.

Facts:
- The longest fjord on Earth is Scoresby Sund in Greenland.
- Norway has about 1,190 fjords along its coast.

Tides
Tidal currents in narrow fjords can be strong. Saltstraumen has one of the strongest tidal currents
in the world. Kayakers wait for slack water before they cross.
"""


# --- Units and extractive answers ---------------------------------------------------------------
def test_headings_and_list_items_are_units_of_their_own():
    units = text_units(FJORDS)
    kinds = {u.text: u.kind for u in units}
    assert kinds["Fjords of the north"] == "heading" and kinds["Sills"] == "heading"
    assert kinds["The longest fjord on Earth is Scoresby Sund in Greenland."] == "item"
    # The hard line wrap inside a sentence does not end it, and no heading is glued to a sentence.
    assert "The Sognefjord runs 205 kilometres inland, reaching a depth of 1,308 metres." in kinds
    assert not any(u.text.startswith(("Sills ", "Depth ", "Tides ")) for u in units)
    for unit in units:  # offsets point at the unit in the text
        assert " ".join(FJORDS[unit.start:unit.end].split()).lstrip("#- ").startswith(unit.text[:10])


@pytest.mark.django_db
def test_extractive_answers_over_many_overlapping_chunks_repeat_and_cut_nothing():
    source = SourceFactory(name="fjords")
    document = document_ingest(source=source, external_id="fjords.md", filename="fjords.md",
                               content=FJORDS.encode()).document
    document.text = parse(FJORDS.encode(), "fjords.md").text
    document.save(update_fields=["text"])
    # Small chunks, half of each overlapping its neighbour: every sentence is in two chunks, and
    # most chunks start or end inside a sentence.
    chunks = chunks_split(document.text, embedder=embedder(), size=24, overlap=12)
    assert len(chunks) >= 8
    assert any(not c.text.rstrip().endswith((".", ":")) for c in chunks)  # chunks cut sentences
    hits = [SearchHit(chunk_id=f"{document.pk}-{c.ordinal}", document_id=document.pk, source_id=source.pk,
                      ordinal=c.ordinal, title="Fjords", text=c.text, uri="", score=1.0 / (1 + i))
            for i, c in enumerate(sorted(chunks, key=lambda c: -c.ordinal))]  # ranked in reverse order
    passages = passages_from_hits(hits)
    units = [u for p in passages for u in p.units]
    assert len({u.start for u in units}) == len(units)  # no unit in two passages
    whole = {u.text for u in text_units(document.text)}
    for question in ("How deep is the Sognefjord?", "What does a sill do to the water of a fjord?",
                     "Where are the strongest tidal currents?"):
        answer = extractive_answer(question, passages, sentences=4)
        quoted = [s.strip() for s in re.split(r"\s*\[\d+\]\s*", answer) if s.strip()]
        assert quoted, answer
        assert len(quoted) == len(set(quoted)), answer  # nothing repeated
        for sentence in quoted:  # each a whole sentence or item of the document, no heading
            assert sentence in whole, (sentence, answer)
            assert sentence.endswith((".", "!", "?")), answer
            assert not sentence.startswith(("Sills", "Depth", "Tides", "Fjords of")), answer
    answer = extractive_answer("How deep is the Sognefjord?", passages, sentences=3)
    assert "1,308 metres." in answer
    # Within one passage the sentences read in the document's order.
    for n in {int(x) for x in re.findall(r"\[(\d+)\]", answer)}:
        mine = [s for s in re.split(r"(?<=\])\s*", answer) if s.endswith(f"[{n}]")]
        positions = [document.text.find(s.removesuffix(f" [{n}]").split(",")[0]) for s in mine]
        assert positions == sorted(positions)


def test_a_model_that_says_the_passages_do_not_answer_is_recognised():
    assert model_declined("The passages do not say what the capital of Peru is.")
    assert model_declined("I cannot answer that from the documents.")
    assert not model_declined("The Aurora glacier is forty-two kilometres long [1].")
    expected = "Your sources say nothing about \u201cWhat is the capital of Peru\u201d."
    assert abstention_text("What is the capital of Peru?") == expected


# --- Abstention over a small corpus -------------------------------------------------------------
OFF_TOPIC = ["What is the capital of Peru?", "Who won the football world cup in 2014?",
             "How do I make a sourdough starter?", "How do I reverse a list in Python?"]


@pytest.mark.worker
def test_off_topic_questions_abstain_and_on_topic_ones_answer_and_cite(corpus):
    client = client_for(corpus.member)
    for question in OFF_TOPIC:
        body = client.post("/api/chat/", {"question": question}, format="json").json()
        assert body["abstained"] is True, (question, body["text"])
        assert body["citations"] == [] and "[" not in body["text"]
        assert body["text"].startswith("Your sources say nothing about")
        assert len(body["related"]) <= 3
        results = client.get("/api/search/", {"q": question}).json()["results"]
        assert results and not any(r["relevant"] for r in results)  # still results: near misses
    for question, words, document in (
            (f"How long is the Aurora glacier {corpus.marker}?", "forty-two kilometres", corpus.public[0]),
            (f"When did Mount Kettle {corpus.marker} last erupt?", "2011", corpus.public[1])):
        body = client.post("/api/chat/", {"question": question}, format="json").json()
        assert body["abstained"] is False and words in body["text"], body
        assert body["citations"][0]["document_id"] == document.pk
        results = client.get("/api/search/", {"q": question}).json()["results"]
        assert results[0]["relevant"] and results[0]["document_id"] == document.pk
        assert 0 < results[0]["relevance"] <= 1
    assert Message.objects.filter(abstained=True).count() == len(OFF_TOPIC)


@pytest.mark.worker
def test_asking_within_chosen_sources(corpus):
    client = client_for(corpus.accountant)
    handbook = corpus.public[0].source_id
    question = f"What is the Zephyrine {corpus.marker} project budget?"
    inside = client.post("/api/chat/", {"question": question, "sources": [corpus.secret.source_id]},
                         format="json").json()
    assert inside["citations"] and {c["document_id"] for c in inside["citations"]} == {corpus.secret.pk}
    assert inside["sources"] == [corpus.secret.source_id]
    outside = client.post("/api/chat/", {"question": question, "sources": [handbook]}, format="json").json()
    assert corpus.secret.pk not in {c["document_id"] for c in outside["citations"] + outside["related"]}
    # A source the asker may not see is not found, like one that does not exist.
    denied = client_for(corpus.member).post("/api/chat/", {"question": question,
                                                           "sources": [corpus.secret.source_id]}, format="json")
    assert denied.status_code == 404 and "No source" in denied.json()["detail"]
    bad = client.post("/api/chat/", {"question": question, "sources": ["x"]}, format="json")
    assert bad.status_code == 400


# --- Citations that open: the document page -------------------------------------------------------
@pytest.mark.worker
def test_the_document_page_shows_the_cited_passage_to_who_may_see_it(corpus, client):
    answer = client_for(corpus.member).post(
        "/api/chat/", {"question": f"How long is the Aurora glacier {corpus.marker}?"}, format="json").json()
    citation = answer["citations"][0]
    # An upload's citation opens the document page (the fixture's uploads carry a web-looking uri).
    assert citation["url"] == f"/documents/{citation['document_id']}/?passage={citation['chunk_id']}#passage"
    client.force_login(corpus.member)
    page = client.get(citation["url"].split("#")[0])
    assert page.status_code == 200
    html = page.content.decode()
    assert corpus.public[0].title in html and corpus.public[0].source.name in html
    assert re.search(r'<mark id="passage"[^>]*>[^<]*forty-two kilometres', html)
    assert f'href="/documents/{citation["document_id"]}/download/"' in html

    download = client.get(f"/documents/{corpus.public[0].pk}/download/")
    assert download.status_code == 200
    disposition = download["Content-Disposition"]
    assert disposition.startswith("attachment;") and "glacier.txt" in disposition
    assert download["Content-Type"] == "text/plain; charset=utf-8"
    assert download["X-Content-Type-Options"] == "nosniff"
    assert b"".join(download.streaming_content) == corpus.public[0].file.open("rb").read()

    # The restricted document: 404 for the member, shown to the accountant.
    assert client.get(f"/documents/{corpus.secret.pk}/").status_code == 404
    assert client.get(f"/documents/{corpus.secret.pk}/download/").status_code == 404
    client.force_login(corpus.accountant)
    assert client.get(f"/documents/{corpus.secret.pk}/").status_code == 200
    client.logout()
    assert client.get(f"/documents/{corpus.public[0].pk}/").status_code == 302  # sign in first


@pytest.mark.django_db
def test_html_originals_download_as_opaque_bytes(client):
    source = SourceFactory(name="pages")
    markup = b"<!doctype html><html><body><script>alert(1)</script><p>Hello there.</p></body></html>"
    document = document_ingest(source=source, external_id="page.html", filename="page.html", content=markup).document
    document.media_type = "text/html"
    document.save(update_fields=["media_type"])
    client.force_login(UserFactory())
    download = client.get(f"/documents/{document.pk}/download/")
    assert download["Content-Type"] == "application/octet-stream"
    assert download["Content-Disposition"].startswith("attachment;")
    assert b"".join(download.streaming_content) == markup


def pdf_pages(pages: list[list[str]], *, title: str = "") -> bytes:
    """A genuine PDF with one page per list of lines (Helvetica text), optionally titled."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    count = len(pages)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(count))
               + b"] /Count " + str(count).encode() + b" >>",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL", *[f"({escape(line)}) Tj T*" for line in lines], "ET"]
        stream = "\n".join(ops).encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>".encode())
        objects.append(b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream")
    info = None
    if title:
        objects.append(f"<< /Title ({escape(title)}) >>".encode())
        info = len(objects)
    return pdf_document(objects, info=info)


def test_titles_of_pdfs_and_docx_without_metadata():
    pdf = pdf_pages([["Annual Glacier Survey", "The survey measured forty glaciers this year."]])
    assert parse(pdf, "survey.pdf").title == "Annual Glacier Survey"
    titled = pdf_pages([["Some Heading", "Body text here."]], title="Metadata Title")
    assert parse(titled, "t.pdf").title == "Metadata Title"

    import docx

    document = docx.Document()
    document.add_heading("Field Notes on Otters", level=1)
    document.add_paragraph("Otters sleep holding hands.")
    out = io.BytesIO()
    document.save(out)
    assert parse(out.getvalue(), "notes.docx").title == "Field Notes on Otters"
    assert parse(docx_bytes(["Text."], title="Core Title"), "x.docx").title == "Core Title"


@pytest.mark.worker
def test_pdf_citations_name_the_page(worker, client):
    marker = "qz" + UserFactory.build().username[-6:].lower()
    source = SourceFactory(name=f"reports-{marker}", public=True, chunk_size=32, chunk_overlap=8)
    pages = [["Glacier Report", "The first page describes the survey method in general terms.",
              "Each team walked the length of its glacier twice, once in spring and once in autumn."],
             ["The second page lists the equipment that the surveyors carried.",
              "They took ropes, crampons, a theodolite and enough food for ten days on the ice."],
             [f"The Borealis glacier {marker} lost eleven metres of ice in the last summer."]]
    document = settled(document_ingest(source=source, external_id="report.pdf", filename="report.pdf",
                                       content=pdf_pages(pages)).document)
    assert document.title == "Glacier Report"
    member = UserFactory()
    body = client_for(member).post("/api/chat/", {"question": f"How much ice did the Borealis glacier {marker} lose?"},
                                   format="json").json()
    assert body["abstained"] is False, body
    cited = [c for c in body["citations"] if c["document_id"] == document.pk]
    assert cited and cited[0]["page"] == 3, cited
    client.force_login(member)
    html = client.get(cited[0]["url"].split("#")[0]).content.decode()
    assert 'id="page-3"' in html and "page 3" in html


# --- LLM mode -----------------------------------------------------------------------------------
@pytest.mark.worker
def test_an_llm_that_says_it_cannot_answer_abstains(corpus, fake_llm):  # noqa: F811
    fake_llm.script = ["The passages do not say ", "how deep the glacier is."]
    with override_settings(LLM_BASE_URL=fake_llm.base_url, LLM_MODEL="fake-model"):
        body = client_for(corpus.member).post(
            "/api/chat/", {"question": f"How long is the Aurora glacier {corpus.marker}?"}, format="json").json()
    assert body["mode"] == "generative" and body["abstained"] is True
    assert body["citations"] == [] and body["text"].startswith("Your sources say nothing about")
    assert body["related"]


@pytest.mark.worker
def test_the_search_command_prints_source_names_and_highlighted_passages(corpus, capfd):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("search", f"Aurora glacier {corpus.marker}", "--k", "2", stdout=out)
    printed = out.getvalue()
    assert f"handbook-{corpus.marker} / Glacier notes" in printed
    assert "*Aurora* *glacier*" in printed and "<mark>" not in printed
    assert " INFO " not in capfd.readouterr().err
