"""Reads for sources and documents."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Q, QuerySet

from ingestion.models import Chunk, Document, Source, SyncRun
from ingestion.search_index import AccessFilter


def access_for_user(user: AbstractBaseUser | AnonymousUser | None) -> AccessFilter:
    """The search-index access filter for `user`: staff see everything, others public sources
    plus those of their groups, anonymous users public sources only.

    The sources are read from the database now, and the filter is by their ids alone: the index's
    own copy of each source's access fields is updated in the background after a grant changes,
    so trusting it would show a revoked source, or hide a granted one, until the update ran
    (issue 14; tests/security/test_access_machine.py)."""
    if user is not None and user.is_authenticated and (user.is_staff or user.is_superuser):
        return AccessFilter.staff()
    visible = tuple(sorted(sources_visible_to(user).values_list("pk", flat=True)))
    return AccessFilter(everything=True, source_ids=visible)


def sources_visible_to(user) -> QuerySet[Source]:
    if user is not None and user.is_authenticated and (user.is_staff or user.is_superuser):
        return Source.objects.all()
    if user is None or not user.is_authenticated:
        return Source.objects.filter(public=True)
    return Source.objects.filter(Q(public=True) | Q(groups__in=user.groups.all())).distinct()


def documents_visible_to(user) -> QuerySet[Document]:
    return Document.objects.filter(source__in=sources_visible_to(user))


def document_may_change(*, user, document: Document) -> bool:
    """Whether `user` may replace or delete `document`: the one rule for every path (REST API,
    admin, CLI `--as`, any future intake). Staff may change any document; another user only one
    of a source they may see, and then only a document they uploaded, or any document of a source
    whose editor groups include one of theirs. Nobody signed in (None, anonymous) may change
    any: the system's own writes do not ask (services take `user=None` to mean the system)."""
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser:
        return True
    # Read at call time, like every access check: a revoked membership counts at once.
    if not sources_visible_to(user).filter(pk=document.source_id).exists():
        return False
    if document.uploaded_by_id is not None and document.uploaded_by_id == user.pk:
        return True
    return user.groups.filter(sources_edited=document.source_id).exists()


# --- REST API reads -------------------------------------------------------------------------
# Each takes the caller and applies their access: a row the caller may not see is reported as
# missing (None), never as forbidden, so ids leak nothing.


def source_list(*, user) -> QuerySet[Source]:
    """Sources visible to `user`, with their document counts by status (count_<status>)."""
    counts = {
        f"count_{status}": Count("documents", filter=Q(documents__status=status))
        for status in Document.Status.values
    }
    # Filter by id (not by joining groups) so the group join cannot multiply the counts.
    return (
        Source.objects.filter(pk__in=sources_visible_to(user).values("pk"))
        .annotate(**counts)
        .prefetch_related("groups", "editor_groups")
        .order_by("name", "pk")
    )


def source_get(*, user, source_id: int) -> Source | None:
    return source_list(user=user).filter(pk=source_id).first()


def document_list(*, user, source_id: int | None = None, status: str | None = None) -> QuerySet[Document]:
    documents = documents_visible_to(user)
    if source_id is not None:
        documents = documents.filter(source_id=source_id)
    if status:
        documents = documents.filter(status=status)
    return documents.select_related("uploaded_by").order_by("-updated_at", "-pk")


def document_get(*, user, document_id: int) -> Document | None:
    return documents_visible_to(user).select_related("source", "uploaded_by").filter(pk=document_id).first()


def chunks_for_document(*, document: Document) -> QuerySet[Chunk]:
    return Chunk.objects.filter(document=document).order_by("ordinal")


def sync_runs_of(*, source: Source) -> QuerySet[SyncRun]:
    """The sync runs of `source` (whose visibility the caller checked), newest first."""
    return SyncRun.objects.filter(source=source).order_by("-started_at", "-pk")


def source_last_sync(*, source: Source) -> SyncRun | None:
    return sync_runs_of(source=source).first()
