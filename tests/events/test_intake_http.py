"""POST /api/events/: the CloudEvents HTTP binding in its three modes, every validation rule,
authentication per push source, what each event type does, idempotency. The recorded changes are
applied in this process (apply.received_events_apply, what the worker's subscriber runs)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from events.intake.apply import received_events_apply
from events.models import ReceivedEvent
from events.webhooks import signer
from ingestion.models import Document
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

URL = "/api/events/"


def event(type="freshet.document.upsert", data=None, **attributes):
    body = {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/crm", "type": type, **attributes}
    if data is not None:
        body["data"] = data
    return body


def upsert(external_id="kb/1", content="Fjords are long, narrow inlets.", **data):
    return event(data={"external_id": external_id, "title": "Fjords", "content": content, **data})


def post(source, body, *, content_type="application/cloudevents+json", secret=None, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    client = APIClient()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret or source.config['secret']}"} if source is not None else {}
    return client.generic("POST", URL, raw, content_type=content_type, **auth, **headers)


def document(source, external_id):
    received_events_apply(source_id=source.pk)
    return Document.objects.filter(source=source, external_id=external_id).first()


def test_it_takes_a_structured_upsert_then_a_delete(push_source):
    response = post(push_source, upsert(uri="https://kb.example/1", metadata={"team": "geo"}))
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1, "duplicates": 0, "mode": "structured", "source": push_source.name}
    doc = document(push_source, "kb/1")
    assert doc.file.read() == b"Fjords are long, narrow inlets."
    assert (doc.title, doc.uri, doc.uploaded_by) == ("Fjords", "https://kb.example/1", None)
    assert doc.metadata["team"] == "geo" and doc.metadata["cloudevent"]["source"] == "/crm"

    response = post(push_source, event("freshet.document.delete", data={"external_id": "kb/1"}))
    assert response.status_code == 202
    assert document(push_source, "kb/1") is None
    assert set(ReceivedEvent.objects.values_list("status", flat=True)) == {"applied"}


def test_one_applied_batch_keeps_the_order_of_its_upserts_and_deletes(push_source):
    assert post(push_source, upsert("kb/old", "Old text.")).status_code == 202
    assert document(push_source, "kb/old") is not None
    batch = [
        event("freshet.document.delete", data={"external_id": "kb/old"}),  # there: deleted
        event("freshet.document.delete", data={"external_id": "kb/never"}),  # never there: done
        upsert("kb/new", "First text."),
        event("freshet.document.delete", data={"external_id": "kb/new"}),  # made in this batch: deleted
        upsert("kb/new", "Second text."),  # and made again
        upsert("kb/gone", "Gone text."),
        event("freshet.document.delete", data={"external_id": "kb/gone"}),
    ]
    response = post(push_source, batch, content_type="application/cloudevents-batch+json")
    assert response.status_code == 202 and response.json()["accepted"] == len(batch)
    received_events_apply(source_id=push_source.pk)
    kept = dict(Document.objects.filter(source=push_source).values_list("external_id", "title"))
    assert set(kept) == {"kb/new"}
    assert Document.objects.get(source=push_source, external_id="kb/new").file.read() == b"Second text."
    assert set(ReceivedEvent.objects.values_list("status", flat=True)) == {"applied"}
    assert set(ReceivedEvent.objects.values_list("content", flat=True)) == {b""}


def test_it_takes_a_binary_mode_event_with_percent_encoded_headers(push_source):
    data = {"external_id": "kb/ü", "content": "Glaciers carve valleys.", "title": "Glaciers"}
    response = post(push_source, json.dumps(data).encode(), content_type="application/json",
                    HTTP_CE_SPECVERSION="1.0", HTTP_CE_ID="b-1", HTTP_CE_SOURCE="/crm%20eu",
                    HTTP_CE_TYPE="freshet.document.upsert", HTTP_CE_TIME="2026-12-01T12:00:00Z",
                    HTTP_CE_TENANT="n%C3%B8rd")
    assert response.status_code == 202, response.content
    assert response.json()["mode"] == "binary"
    received = ReceivedEvent.objects.get()
    assert (received.ce_source, received.attributes["tenant"]) == ("/crm eu", "nørd")
    assert document(push_source, "kb/ü").file.read() == b"Glaciers carve valleys."


def test_a_batch_is_taken_whole_or_refused_whole(push_source):
    batch = [upsert(f"kb/{n}", f"Text {n}") for n in range(3)]
    response = post(push_source, batch, content_type="application/cloudevents-batch+json")
    assert response.status_code == 202 and response.json()["accepted"] == 3
    bad = [upsert("kb/7"), {**upsert("kb/8"), "specversion": "0.3"}]
    response = post(push_source, bad, content_type="application/cloudevents-batch+json")
    assert response.status_code == 400 and "event 1" in response.json()["detail"]
    assert ReceivedEvent.objects.count() == 3  # nothing of the refused batch


def test_the_same_source_and_id_again_is_a_no_op(push_source):
    first = upsert()
    assert post(push_source, first).status_code == 202
    again = post(push_source, {**first, "data": {**first["data"], "content": "Changed."}})
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 1, "mode": "structured",
                                                         "source": push_source.name}
    assert document(push_source, "kb/1").file.read() == b"Fjords are long, narrow inlets."
    # The same id from another event source is another event.
    assert post(push_source, {**first, "source": "/erp"}).status_code == 202


def test_data_base64_content(push_source):
    body = event(data={"external_id": "kb/b", "content_base64": base64.b64encode(b"Moraines hold rocks.").decode(),
                       "content_type": "text/markdown"})
    assert post(push_source, body).status_code == 202
    doc = document(push_source, "kb/b")
    assert doc.file.read() == b"Moraines hold rocks." and doc.filename == "event.md"


@pytest.mark.parametrize(("data", "content_type", "expected"), [
    ("Ticket 4711: the printer is on fire.", "text/plain", b"Ticket 4711: the printer is on fire."),
    ({"order": 42, "customer": {"name": "Ada"}, "items": ["tea", "scones"], "paid": True}, "application/json",
     b"order: 42\ncustomer:\n  name: Ada\nitems:\n  - tea\n  - scones\npaid: yes"),
    ("<alert><host>db1</host><text>Disk full</text></alert>", "application/xml", b"db1\nDisk full"),
])
def test_events_as_documents_render_their_data(stream_source, data, content_type, expected):
    body = event("com.example.alert", data=data, datacontenttype=content_type, subject="alerts/9")
    assert post(stream_source, body).status_code == 202
    doc = document(stream_source, "alerts/9")
    assert doc.file.read() == expected
    assert doc.title == "alerts/9"
    assert doc.metadata["cloudevent"]["type"] == "com.example.alert"


def test_an_event_without_subject_is_named_by_source_and_id_and_binary_data_goes_to_the_parsers(stream_source):
    pdf = b"%PDF-1.4 not really a PDF"
    body = event("com.example.scan", datacontenttype="application/pdf", id="scan-1",
                 data_base64=base64.b64encode(pdf).decode())
    assert post(stream_source, body).status_code == 202
    doc = document(stream_source, "/crm/scan-1")
    assert doc.file.read() == pdf and doc.filename == "event.pdf" and doc.title == "com.example.scan"


def test_an_unknown_type_is_422_naming_the_accepted_types(push_source):
    response = post(push_source, event("com.example.alert", data={"x": 1}))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "freshet.document.upsert" in detail and "freshet.document.delete" in detail


@pytest.mark.parametrize(("body", "reason"), [
    ({**upsert(), "id": ""}, "'id' is required"),
    ({key: value for key, value in upsert().items() if key != "source"}, "'source' is required"),
    ({**upsert(), "type": 7}, "'type' is required"),
    ({**upsert(), "specversion": "0.3"}, "specversion '0.3'"),
    ({**upsert(), "time": "yesterday"}, "RFC 3339"),
    ({**upsert(), "time": "2026-13-01T00:00:00Z"}, "RFC 3339"),
    ({**upsert(), "myExt": "x"}, "attribute name 'myExt'"),
    ({**upsert(), "averyveryverylongname1": "x"}, "at most 20 characters"),
    ({**upsert(), "data_base64": "aGk="}, "not both"),
    ({**upsert(), "subject": ""}, "'subject' must be a non-empty string"),
    ({**upsert(), "tags": ["a"]}, "string, a number or a boolean"),
    (event(data={"content": "no id"}), "external_id is required"),
    (event(data={"external_id": "x"}), "exactly one of them"),
    (event(data={"external_id": "x", "content_base64": "***", "content_type": "text/plain"}), "not valid base64"),
    (b"{not json", "not valid JSON"),
    ([upsert()], "is an object"),
])
def test_invalid_events_are_400_with_the_reason(push_source, body, reason):
    response = post(push_source, body)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not ReceivedEvent.objects.exists()


def test_binary_mode_needs_its_headers_and_a_batch_is_an_array(push_source):
    response = post(push_source, b"hello", content_type="text/plain")
    assert response.status_code == 400 and "ce-id" in response.json()["detail"]
    response = post(push_source, b"hello", content_type="text/plain", HTTP_CE_ID="1", HTTP_CE_SOURCE="/x",
                    HTTP_CE_TYPE="freshet.document.upsert")
    assert response.status_code == 400 and "specversion" in response.json()["detail"]
    response = post(push_source, upsert(), content_type="application/cloudevents-batch+json")
    assert response.status_code == 400 and "JSON array" in response.json()["detail"]


def test_it_refuses_a_bad_bearer_secret_and_no_credentials(push_source):
    assert post(push_source, upsert(), secret="whsec_" + "A" * 40).status_code == 401
    response = post(None, upsert())
    assert response.status_code == 401 and "Bearer" in response.json()["detail"]
    assert not ReceivedEvent.objects.exists()


def signed(source, raw: bytes, *, at: datetime | None = None, secret: str = "") -> dict[str, str]:
    at = at or datetime.now(UTC)
    msg_id = f"msg_{uuid.uuid4().hex}"
    signature = signer(secret or source.config["secret"]).sign(msg_id=msg_id, timestamp=at, data=raw.decode())
    return {"HTTP_WEBHOOK_ID": msg_id, "HTTP_WEBHOOK_TIMESTAMP": str(int(at.timestamp())),
            "HTTP_WEBHOOK_SIGNATURE": signature}


def test_a_standard_webhooks_signature_authenticates_and_a_bad_or_old_one_does_not(push_source):
    other = SourceFactory(name="other-push", kind="push",
                          config={"secret": "whsec_" + base64.b64encode(b"k" * 32).decode()})
    raw = json.dumps(upsert()).encode()
    client = APIClient()

    def send(headers):
        return client.generic("POST", URL, raw, content_type="application/cloudevents+json", **headers)

    assert send(signed(push_source, raw)).status_code == 202
    assert ReceivedEvent.objects.get().source == push_source  # the key that verified names the source
    raw = json.dumps(upsert("kb/2")).encode()
    assert send(signed(other, raw, secret="whsec_" + base64.b64encode(b"x" * 32).decode())).status_code == 401
    assert send({**signed(push_source, raw), "HTTP_WEBHOOK_SIGNATURE": "v1,bm90IGl0"}).status_code == 401
    old = datetime.now(UTC) - timedelta(minutes=6)
    response = send(signed(push_source, raw, at=old))
    assert response.status_code == 401 and "5 minutes" in response.json()["detail"]


def test_a_source_of_another_kind_takes_no_events(push_source):
    upload = SourceFactory(name="handbook", kind="upload")
    response = APIClient().generic("POST", f"{URL}?source={upload.name}", json.dumps(upsert()).encode(),
                                   content_type="application/cloudevents+json",
                                   HTTP_AUTHORIZATION=f"Bearer {push_source.config['secret']}")
    assert response.status_code == 400 and "upload source" in response.json()["detail"]


def test_a_body_over_the_limit_is_413(push_source, settings):
    settings.EVENTS_MAX_BODY_BYTES = 2048
    response = post(push_source, upsert(content="x" * 4000))
    assert response.status_code == 413
    assert not ReceivedEvent.objects.exists()


def test_the_secret_is_generated_and_validated_by_the_push_connector():
    from ingestion.connectors import ConfigInvalid, config_clean

    config = config_clean("push", {})
    assert config["secret"].startswith("whsec_") and config["events_as_documents"] is False
    for bad in ({"secret": "short"}, {"events_as_documents": "yes"}, {"whatever": 1}):
        with pytest.raises(ConfigInvalid):
            config_clean("push", bad)
    assert config_clean("queue", {"url": "amqp://guest:guest@127.0.0.1:5672//", "queue": "q", "exchange": "x"})[
        "binding_key"] == "#"
    with pytest.raises(ConfigInvalid):
        config_clean("queue", {"queue": "q"})


def test_a_push_sources_secret_is_shown_once_and_kept_when_a_change_leaves_it_out():
    from tests.conftest import client_for
    from tests.factories import UserFactory

    staff = client_for(UserFactory(username="ops", is_staff=True))
    response = staff.post("/api/sources/", {"name": "tickets", "kind": "push"}, format="json")
    assert response.status_code == 201, response.content
    secret = response.json()["config"]["secret"]
    assert secret.startswith("whsec_")
    source_id = response.json()["id"]
    assert "secret" not in staff.get(f"/api/sources/{source_id}/").json()["config"]
    response = staff.patch(f"/api/sources/{source_id}/", {"config": {"events_as_documents": True}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["config"] == {"events_as_documents": True}
    source = SourceFactory._meta.model.objects.get(pk=source_id)
    assert source.config["secret"] == secret and source.config["events_as_documents"] is True
    assert post(source, upsert()).status_code == 202


def test_the_sweep_applies_what_was_recorded_and_left_pending(push_source):
    from events.intake.tasks import received_events_sweep

    assert post(push_source, upsert()).status_code == 202  # its apply task is never queued here
    received_events_sweep()
    assert not Document.objects.exists()  # recorded just now: its own task has it
    ReceivedEvent.objects.update(received_at=datetime.now(UTC) - timedelta(minutes=2))
    received_events_sweep()
    assert Document.objects.get(source=push_source).external_id == "kb/1"


def test_pushes_in_a_burst_ask_for_one_apply_until_it_starts(push_source):
    from events.intake.services import RECEIVED, apply_request
    from events.models import Event

    apply_request(source_id=push_source.pk, count=1)
    apply_request(source_id=push_source.pk, count=1)  # the first's apply has not started: it takes these too
    assert Event.objects.filter(type=RECEIVED).count() == 1
    received_events_apply(source_id=push_source.pk)  # starts: clears the flag
    apply_request(source_id=push_source.pk, count=1)
    assert Event.objects.filter(type=RECEIVED).count() == 2
