"""/metrics: after a real ingest (a real worker process), the pipeline's figures, the workers'
own included (multiprocess mode); refused from other addresses without the token."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from feedback.models import Feedback
from ingestion.models import Document
from ingestion.services import document_ingest
from tests.conftest import client_for, wait_for
from tests.factories import SourceFactory, UserFactory


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.mark.worker
def test_metrics_after_an_ingest(worker, client):
    source = SourceFactory(name="metered")
    document = document_ingest(source=source, external_id="fjord.txt",
                               content=b"The fjord is six hundred metres deep at its mouth.").document
    wait_for(lambda: Document.objects.get(pk=document.pk).status == Document.Status.INDEXED, timeout=120,
             message="the document to be indexed")
    user = UserFactory(username="searcher")
    assert client_for(user).get("/api/search/", {"q": "fjord"}).status_code == 200

    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    found = samples(response.content.decode())

    assert value(found, "freshet_documents", source="metered", status="indexed") == 1
    assert value(found, "freshet_documents", source="metered", status="failed") == 0
    # Measured in the worker's processes, read here: multiprocess mode works.
    for handler, queue in (("document_parse", "parse"), ("document_chunk", "chunk"), ("document_embed", "embed")):
        count = value(found, "freshet_stage_duration_seconds_count", handler=handler, queue=queue)
        total = value(found, "freshet_stage_duration_seconds_sum", handler=handler, queue=queue)
        assert count and count >= 1, (handler, sorted(k for k in found if k[0].startswith("freshet_stage")))
        assert 0 < total < 120
    assert value(found, "freshet_events_published_total", type="freshet.document.indexed") >= 1
    assert value(found, "freshet_events_published_total", type="freshet.document.changed") >= 1
    lag = value(found, "freshet_freshness_lag_seconds", quantile="0.5")
    assert lag is not None and 0 < lag < 120
    assert value(found, "freshet_freshness_lag_samples") >= 1
    assert {key[1][0][1] for key in found if key[0] == "freshet_queue_depth"} >= {"parse", "embed", "index"}
    assert all(v >= 0 for key, v in found.items() if key[0] == "freshet_queue_depth")
    searches = [v for (name, labels), v in found.items()
                if name == "freshet_request_duration_seconds_count" and ("view", "chat:search") in labels
                or name == "freshet_request_duration_seconds_count" and any("search" in str(x) for x in labels)]
    assert searches and searches[0] >= 1
    assert value(found, "freshet_sync_runs_total", status="succeeded") == 0
    assert ("freshet_feedback_votes_total", ()) not in found  # labelled by rating and reason, none yet
    assert Feedback.objects.count() == 0


def test_it_refuses_other_addresses_without_the_token(db, client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 200  # loopback, as the test client comes
    far = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert far.status_code == 403 and "Bearer" in far.content.decode()
    # A proxy on this host forwards others' requests from loopback: the header says so.
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    allowed = client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert allowed.status_code == 200 and b"freshet_documents" in allowed.content


def test_without_a_token_only_loopback_gets_in(db, client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.8", HTTP_AUTHORIZATION="Bearer ").status_code == 403
