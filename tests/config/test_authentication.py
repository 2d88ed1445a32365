"""Token authentication by one prepared statement (config/authentication.py): what DRF's
TokenAuthentication loads, and a revoked token or a deactivated user refused at the next request."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from config.authentication import token_with_user
from tests.conftest import client_for
from tests.factories import UserFactory

URL = "/api/search/"


@pytest.mark.django_db
def test_it_loads_the_token_and_user_as_the_orm_does():
    user = UserFactory(first_name="Ada", is_staff=True)
    token, _ = Token.objects.get_or_create(user=user)
    found = token_with_user(Token, token.key)
    expected = Token.objects.select_related("user").get(key=token.key)
    assert (found.key, found.user_id, found.created) == (expected.key, expected.user_id, expected.created)
    assert found.created.tzinfo is not None
    for field in User._meta.concrete_fields:
        assert getattr(found.user, field.attname) == getattr(expected.user, field.attname), field.name
    assert isinstance(found.user.is_active, bool) and found.user.is_staff is True
    assert not found._state.adding and found.user._state.db == "default"
    assert token_with_user(Token, token.key[:-1] + "x") is None


@pytest.mark.django_db
def test_a_revoked_token_or_deactivated_user_is_refused_at_the_next_request():
    user = UserFactory()
    client = client_for(user)
    assert client.get(URL, {"q": "anything", "mode": "bm25"}).status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    refused = client.get(URL, {"q": "anything", "mode": "bm25"})
    assert refused.status_code == 401 and "inactive" in refused.json()["detail"]
    assert refused["WWW-Authenticate"] == "Token"
    User.objects.filter(pk=user.pk).update(is_active=True)
    assert client.get(URL, {"q": "anything", "mode": "bm25"}).status_code == 200
    Token.objects.filter(user=user).delete()
    revoked = client.get(URL, {"q": "anything", "mode": "bm25"})
    assert revoked.status_code == 401 and "Invalid token" in revoked.json()["detail"]
