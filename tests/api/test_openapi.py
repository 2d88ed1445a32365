"""The OpenAPI 3 schema at /api/schema/ and Swagger UI at /api/docs/ (assets served locally)."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders

OPERATIONS = {
    ("/api/sources/", "get"), ("/api/sources/", "post"),
    ("/api/sources/{source_id}/", "get"), ("/api/sources/{source_id}/", "patch"),
    ("/api/sources/{source_id}/", "delete"),
    ("/api/documents/", "get"), ("/api/documents/", "post"), ("/api/documents/bulk/", "post"),
    ("/api/documents/{document_id}/", "get"), ("/api/documents/{document_id}/", "delete"),
    ("/api/documents/{document_id}/chunks/", "get"), ("/api/documents/{document_id}/reindex/", "post"),
}


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_every_endpoint_is_documented_with_its_errors(schema):
    assert schema["openapi"].startswith("3.")
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert OPERATIONS <= documented
    for path, method in OPERATIONS:
        operation = schema["paths"][path][method]
        responses = operation["responses"]
        assert "401" in responses, (path, method)
        assert any(code.startswith("2") for code in responses), (path, method)
        assert operation.get("summary"), (path, method)
        if "{" in path:
            assert "404" in responses, (path, method)
        for code, response in responses.items():
            if code.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                    ("/Error", "/BulkRejected")), (path, method, code)


def test_uploads_document_their_multipart_bodies_and_limits(schema):
    upload = schema["paths"]["/api/documents/"]["post"]
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][body]
    assert fields["properties"]["file"]["format"] == "binary"
    assert set(fields["required"]) == {"file", "source"}
    assert {"413", "415", "429"} <= set(upload["responses"])
    assert upload["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    bulk = schema["paths"]["/api/documents/bulk/"]["post"]
    assert "multipart/form-data" in bulk["requestBody"]["content"]


def test_staff_only_writes_document_403(schema):
    for path, method in [("/api/sources/", "post"), ("/api/sources/{source_id}/", "patch"),
                         ("/api/sources/{source_id}/", "delete"), ("/api/documents/{document_id}/reindex/", "post")]:
        assert "403" in schema["paths"][path][method]["responses"], (path, method)


def test_token_and_session_authentication_are_declared(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["type"] == "apiKey" and schemes["tokenAuth"]["name"] == "Authorization"
    assert schemes["cookieAuth"]["in"] == "cookie"


def test_swagger_ui_is_served_with_local_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/api/schema/" in page
    scripts = re.findall(r'src="([^"]+\.js)"', page)
    assert scripts and all(src.startswith("/static/") for src in scripts), scripts
    for src in scripts:  # no CDN: each asset is a file this server has
        assert finders.find(src.removeprefix("/static/")), src
