"""Property-based fuzzing of the REST API against its own OpenAPI schema (schemathesis).

The schema is loaded from the app's /api/schema/ endpoint and every operation of the whole API
is called in process (WSGI) with generated valid and invalid input, twice over: authenticated as
staff, so that writes are exercised too, and as an anonymous client (issue 14). Each response
must not be a 5xx, and its status, content type, headers and body
must be what the schema documents. Bounded and deterministic: a fixed number of examples per
operation, derandomized, no example database.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingestion.models import Chunk
from ingestion.services import document_ingest
from tests.factories import GroupFactory, SourceFactory, UserFactory

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
# Every endpoint but the schema endpoint itself (it documents itself loosely).
schema = schema.exclude(path_regex=r"^/api/schema/")

# Ids of rows that exist, so generated requests hit real objects as well as missing ones.
KNOWN: dict[str, int] = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    choices = [path_parameters]
    for name in ("source_id", "document_id", "sink_id"):
        if name in path_parameters and name in KNOWN:
            choices.append({**path_parameters, name: KNOWN[name]})
    return st.sampled_from(choices)


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the database connection after each request, as a server should;
    in a test that would end the test's transaction. Django's test client does the same."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_headers(db, keep_test_connection):
    team = GroupFactory(name="team")
    source = SourceFactory(name="fuzz", public=False)
    source.groups.add(team)
    document = document_ingest(source=source, external_id="seed", content=b"Seed text.").document
    Chunk.objects.create(id=Chunk.make_id(document.pk, 0), document=document, ordinal=0, text="Seed text.",
                         token_count=3, embedding_model="m", version=1)
    KNOWN.update(source_id=source.pk, document_id=document.pk)
    token, _ = Token.objects.get_or_create(user=UserFactory(username="fuzzer", is_staff=True))
    return {"Authorization": f"Token {token.key}"}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case, staff_headers):
    cache.clear()  # throttle counters: the fuzzer asks far more often than a person
    case.call_and_validate(headers=staff_headers, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_an_anonymous_client_as_its_schema_says(case, staff_headers):
    # staff_headers only seeds the rows; the requests carry no credentials.
    cache.clear()
    case.call_and_validate(headers={}, checks=CHECKS)
