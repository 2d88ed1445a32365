"""A pushed CloudEvent through the real worker: accepted over HTTP, its document indexed and
found by search, then deleted by another event and gone from search."""

from __future__ import annotations

import base64
import io
import json
import uuid

import docx
import pytest
from rest_framework.test import APIClient

from chat.retrieval import retrieve
from ingestion.models import Document
from ingestion.search_index import AccessFilter
from tests.conftest import wait_for
from tests.events.conftest import push_source_new

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def push(source, body: dict):
    return APIClient().generic("POST", "/api/events/", json.dumps(body).encode(),
                               content_type="application/cloudevents+json",
                               HTTP_AUTHORIZATION=f"Bearer {source.config['secret']}")


def found(phrase: str) -> list[int]:
    return [hit.document_id for hit in retrieve(phrase, access=AccessFilter.staff(), k=3, mode="bm25")]


def test_a_pushed_docx_is_retrievable_and_then_gone(worker):
    source = push_source_new(events_as_documents=True)
    phrase = f"zq{uuid.uuid4().hex[:10]}"
    word = docx.Document()
    word.add_paragraph(f"The incident report names {phrase} as the failing switch.")
    buffer = io.BytesIO()
    word.save(buffer)
    response = push(source, {
        "specversion": "1.0", "id": "inc-1", "source": "/noc", "type": "com.example.incident",
        "subject": "incidents/1", "datacontenttype": docx_type(),
        "data_base64": base64.b64encode(buffer.getvalue()).decode(),
    })
    assert response.status_code == 202, response.content
    document = wait_for(lambda: Document.objects.filter(source=source, external_id="incidents/1",
                                                        status=Document.Status.INDEXED).first(),
                        timeout=120, message="the pushed document indexed")
    assert document.media_type == docx_type()
    wait_for(lambda: document.pk in found(phrase), timeout=30, message="the document found by search")

    response = push(source, {"specversion": "1.0", "id": "inc-1-del", "source": "/noc",
                             "type": "freshet.document.delete", "data": {"external_id": "incidents/1"}})
    assert response.status_code == 202
    wait_for(lambda: not Document.objects.filter(pk=document.pk).exists(), timeout=30, message="the document deleted")
    wait_for(lambda: document.pk not in found(phrase), timeout=30, message="the document gone from search")


def docx_type() -> str:
    return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
