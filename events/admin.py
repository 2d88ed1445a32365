from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.timezone import localtime

from events.models import Event


class SubjectFilter(admin.SimpleListFilter):
    """By what the event is about: a kind of subject (documents, sources, ...) or, with
    `?subject=documents/12`, one subject (each document's page links here)."""

    title = "subject"
    parameter_name = "subject"
    KINDS = (("documents", "documents"), ("sources", "sources"), ("feedback", "feedback"), ("stages", "stages"))

    def lookups(self, request, model_admin):
        return self.KINDS

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(subject=value) if "/" in value else queryset.filter(subject__startswith=f"{value}/")


SUBJECT_PAGES = {"documents": "admin:ingestion_document_change", "sources": "admin:ingestion_source_change"}


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """The event log: newest first, read-only; each event links to what it is about."""

    list_display = ("time_shown", "type", "subject_link", "source")
    list_filter = ("type", SubjectFilter, ("time", admin.DateFieldListFilter))
    search_fields = ("=subject", "=id")
    ordering = ("-time", "-id")
    readonly_fields = ("id", "source", "type", "subject_link", "time", "data")
    fields = readonly_fields
    show_full_result_count = False  # a count of the whole log on every page is a full scan
    list_per_page = 100

    @admin.display(description="time", ordering="time")
    def time_shown(self, obj):
        return localtime(obj.time).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]  # events come milliseconds apart

    @admin.display(description="subject", ordering="subject")
    def subject_link(self, obj):
        kind, _, pk = obj.subject.partition("/")
        if kind in SUBJECT_PAGES and pk.isdigit():
            return format_html('<a href="{}">{}</a>', reverse(SUBJECT_PAGES[kind], args=[int(pk)]), obj.subject)
        return obj.subject

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the audit trail: nothing removes a line of it here


# Event sinks, deliveries and received pushed events: their admin lives with them.
from events.sinks import admin as sinks_admin  # noqa: E402, F401
