"""The admin of sources and their sync runs (imported by ingestion/admin.py, which registers the
rest of the app). The source form validates `config` with the kind's own `config_clean`, the
check the REST API uses, and shows each problem next to the field."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Q, Subquery
from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.html import format_html

from ingestion import services
from ingestion.connectors import ConfigInvalid, config_clean
from ingestion.connectors.sync import SourceNotSyncable, SyncAlreadyRunning, source_sync_request
from ingestion.models import Document, Source, SyncRun


class SourceForm(forms.ModelForm):
    class Meta:
        model = Source
        fields = ("name", "kind", "config", "schedule_minutes", "prune", "public", "groups", "editor_groups",
                  "chunk_size", "chunk_overlap")
        help_texts = {
            "config": 'Per kind: url, sitemap, feed {"url": "https://..."}; folder {"path": "/srv/handbook", '
                      '"include": ["*.md"], "exclude": ["drafts/*"]}; upload {}.',
            "schedule_minutes": "Re-sync every N minutes (kept as a periodic task; empty for never).",
        }

    def clean(self):
        cleaned = super().clean()
        kind, config = cleaned.get("kind"), cleaned.get("config")
        if kind and "config" not in self.errors:
            try:
                cleaned["config"] = config_clean(kind, config if config is not None else {})
            except ConfigInvalid as error:
                for key, problems in error.errors.items():
                    for problem in problems:
                        if key == "kind":
                            self.add_error("kind", problem)
                        else:
                            self.add_error("config", f"{key}: {problem}")
        return cleaned


def _last_sync(field: str) -> Subquery:
    return Subquery(SyncRun.objects.filter(source=OuterRef("pk")).order_by("-started_at", "-pk").values(field)[:1])


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    form = SourceForm
    list_display = ("name", "kind", "public", "documents_pending", "documents_processing", "documents_indexed",
                    "documents_failed", "last_synced_at", "last_sync")
    list_filter = ("kind", "public")
    search_fields = ("name",)
    filter_horizontal = ("groups", "editor_groups")
    actions = ["sync_now", "reindex", "retry_failed"]

    def get_queryset(self, request):
        counts = {status: Count("documents", filter=Q(documents__status=status)) for status in Document.Status.values}
        return super().get_queryset(request).annotate(
            **counts, last_sync_id=_last_sync("pk"), last_sync_status=_last_sync("status"),
            last_sync_failed=_last_sync("items_failed"),
        )

    @admin.display(description="pending", ordering="pending")
    def documents_pending(self, obj):
        return obj.pending

    @admin.display(description="processing", ordering="processing")
    def documents_processing(self, obj):
        return obj.processing

    @admin.display(description="indexed", ordering="indexed")
    def documents_indexed(self, obj):
        return obj.indexed

    @admin.display(description="failed", ordering="failed")
    def documents_failed(self, obj):
        return obj.failed

    @admin.display(description="last sync")
    def last_sync(self, obj):
        if not obj.last_sync_id:
            return "—"
        label = SyncRun.Status(obj.last_sync_status).label.lower()
        if obj.last_sync_failed:
            label = f"{label} ({obj.last_sync_failed} failed)"
        return format_html('<a href="{}">{}</a>', reverse("admin:ingestion_syncrun_change", args=[obj.last_sync_id]),
                           label)

    # The PeriodicTask of the source's schedule follows every save and delete.
    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        services.source_schedule_keep(source_id=form.instance.pk)

    def delete_model(self, request, obj):
        services.source_delete(source=obj)

    def delete_queryset(self, request, queryset):
        for source in queryset:
            services.source_delete(source=source)

    @admin.action(description="Sync now")
    def sync_now(self, request, queryset):
        started = 0
        for source in queryset:
            try:
                source_sync_request(source, trigger="admin")
                started += 1
            except (SyncAlreadyRunning, SourceNotSyncable) as error:
                self.message_user(request, error.message, messages.WARNING)
        if started:
            self.message_user(request, f"Sync started for {started} source{'s' if started != 1 else ''}; see "
                                       "Sync runs.", messages.SUCCESS)

    @admin.action(description="Reindex all their documents")
    def reindex(self, request, queryset):
        count = sum(services.source_reindex(source=source) for source in queryset)
        self.message_user(request, f"{count} document{'s' if count != 1 else ''} queued for reprocessing.",
                          messages.SUCCESS)

    @admin.action(description="Retry failed documents")
    def retry_failed(self, request, queryset):
        count = sum(services.source_retry_failed(source=source) for source in queryset)
        self.message_user(request, f"{count} failed document{'s' if count != 1 else ''} queued again.",
                          messages.SUCCESS)


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    """Sync runs as they happened (read-only)."""

    list_display = ("id", "source", "trigger", "status", "started_at", "finished_at", "items_seen", "items_new",
                    "items_changed", "items_unchanged", "items_deleted", "items_failed", "error_short")
    list_filter = ("status", "trigger", "source")
    list_select_related = ("source",)
    readonly_fields = ("source", "trigger", "status", "started_at", "finished_at", "heartbeat_at", "items_seen",
                       "items_new", "items_changed", "items_unchanged", "items_deleted", "items_failed", "error")
    fields = readonly_fields

    @admin.display(description="error")
    def error_short(self, obj):
        return truncatechars(obj.error, 100) if obj.error else ""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
