"""Reads for sources and documents."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from ingestion.models import Document, Source
from ingestion.search_index import AccessFilter


def access_for_user(user: AbstractBaseUser | AnonymousUser | None) -> AccessFilter:
    """The search-index access filter for `user`: staff see everything, others public sources
    plus those of their groups, anonymous users public sources only."""
    if user is None or not user.is_authenticated:
        return AccessFilter()
    if user.is_staff or user.is_superuser:
        return AccessFilter.staff()
    return AccessFilter(groups=tuple(sorted(user.groups.values_list("name", flat=True))))


def sources_visible_to(user) -> QuerySet[Source]:
    if user is not None and user.is_authenticated and (user.is_staff or user.is_superuser):
        return Source.objects.all()
    if user is None or not user.is_authenticated:
        return Source.objects.filter(public=True)
    return Source.objects.filter(Q(public=True) | Q(groups__in=user.groups.all())).distinct()


def documents_visible_to(user) -> QuerySet[Document]:
    return Document.objects.filter(source__in=sources_visible_to(user))
