"""Personas and sources for the REST API tests: a staff member, a member of group `team`, an
outsider in no group; a public source and one restricted to `team`. Clients authenticate with
real tokens (rest_framework.authtoken), as programs do."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import client_for
from tests.factories import GroupFactory, SourceFactory, UserFactory


@pytest.fixture
def team(db):
    return GroupFactory(name="team")


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True)


@pytest.fixture
def member(team):
    user = UserFactory(username="member")
    user.groups.add(team)
    return user


@pytest.fixture
def outsider(db):
    return UserFactory(username="outsider")


@pytest.fixture
def public_source(db):
    return SourceFactory(name="handbook", public=True)


@pytest.fixture
def restricted_source(team):
    source = SourceFactory(name="team-notes", public=False)
    source.groups.add(team)
    return source


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def as_staff(staff):
    return client_for(staff)


@pytest.fixture
def as_member(member):
    return client_for(member)


@pytest.fixture
def as_outsider(outsider):
    return client_for(outsider)
