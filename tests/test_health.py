import pytest
from django.test import override_settings


@pytest.mark.worker
def test_health_is_ok_when_every_part_answers(client, worker):
    response = client.get("/api/health/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"database", "broker", "search_index", "workers"}
    assert body["components"]["workers"]["count"] >= 1


@pytest.mark.django_db
@override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
def test_health_names_the_part_that_is_down(client):
    response = client.get("/api/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert "broker" in body["down"]
    assert body["components"]["broker"]["status"] == "down"
    assert body["components"]["database"]["status"] == "ok"
