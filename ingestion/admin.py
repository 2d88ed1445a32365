from django import forms
from django.contrib import admin, messages
from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.html import format_html
from rest_framework.exceptions import APIException

from ingestion import selectors, services
from ingestion.admin_sources import SourceAdmin, SyncRunAdmin  # noqa: F401  (registers them)
from ingestion.models import Chunk, Document
from ingestion.uploads import upload_check


def _detail_text(detail) -> str:
    """A DRF error's detail (a string, a list or a dict of them) as one sentence for a form."""
    if isinstance(detail, dict):
        return " ".join(_detail_text(value) for value in detail.values())
    if isinstance(detail, list | tuple):
        return " ".join(_detail_text(value) for value in detail)
    return str(detail)


class DocumentForm(forms.ModelForm):
    upload = forms.FileField(required=False, help_text="Upload a file to create or replace the content.")

    class Meta:
        model = Document
        fields = ("source", "external_id", "title", "uri", "chunk_size", "chunk_overlap")

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("upload"):
            raise forms.ValidationError("Choose a file to upload.")
        source = cleaned.get("source")
        refusal = services.source_upload_refusal(source) if source is not None else ""
        if refusal:
            self.add_error("source", refusal)
            return cleaned
        upload = cleaned.get("upload")
        if upload:
            # The API's own checks (ingestion/uploads.py): size, emptiness, the type from the content.
            try:
                cleaned["checked_upload"] = upload_check(upload)
            except APIException as error:
                self.add_error("upload", _detail_text(error.detail))
                return cleaned
            if not cleaned.get("external_id"):
                cleaned["external_id"] = cleaned["checked_upload"].filename
        return cleaned


class ChunkInline(admin.TabularInline):
    model = Chunk
    fields = ("ordinal", "token_count", "text_preview")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True  # the chunk's own page has its whole text

    @admin.display(description="text")
    def text_preview(self, obj):
        return truncatechars(obj.text, 300)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def document_page_url(document_id: int) -> str:
    return f"/documents/{document_id}/"


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    form = DocumentForm
    list_display = ("title_short", "source", "status", "error_short", "chunk_count", "version", "updated_at",
                    "links")
    list_select_related = ("source",)
    list_filter = ("status", "source", "media_type")
    search_fields = ("title", "external_id", "uri")
    readonly_fields = ("uploaded_by", "status", "error", "version", "media_type", "size", "content_hash",
                       "chunk_count", "links", "indexed_at", "created_at", "updated_at")
    show_full_result_count = False
    inlines = [ChunkInline]
    actions = ["reindex"]

    @admin.display(description="document", ordering="title")
    def title_short(self, obj):
        return truncatechars(str(obj), 60)

    @admin.display(description="error")
    def error_short(self, obj):
        return truncatechars(obj.error, 80) if obj.error else ""

    @admin.display(description="see")
    def links(self, obj):
        if obj.pk is None:
            return ""
        return format_html(
            ('<a href="{}">page</a> · <a href="{}?document__id__exact={}">chunks</a> · '
             '<a href="{}?subject=documents/{}">events</a>'),
            document_page_url(obj.pk), reverse("admin:ingestion_chunk_changelist"), obj.pk,
            reverse("admin:events_event_changelist"), obj.pk)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.base_fields["external_id"].required = False
        return form

    # The admin is for staff, whom the rule lets change any document; it is applied here anyway
    # so that every path asks the same question (selectors.document_may_change).
    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (
            obj is None or selectors.document_may_change(user=request.user, document=obj))

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (
            obj is None or selectors.document_may_change(user=request.user, document=obj))

    def save_model(self, request, obj, form, change):
        checked = form.cleaned_data.get("checked_upload")
        if checked:
            result = services.document_ingest(
                source=form.cleaned_data["source"],
                external_id=form.cleaned_data["external_id"] or checked.filename,
                content=checked.content,
                filename=checked.filename,
                title=form.cleaned_data.get("title", ""),
                uri=form.cleaned_data.get("uri", ""),
                user=request.user,
            )
            obj.pk = result.document.pk
            chunking = (form.cleaned_data.get("chunk_size"), form.cleaned_data.get("chunk_overlap"))
            if chunking != (result.document.chunk_size, result.document.chunk_overlap):
                services.document_chunking_set(document=result.document, size=chunking[0], overlap=chunking[1])
            obj.refresh_from_db()
        else:
            obj.save()

    @admin.action(description="Reprocess the selected documents")
    def reindex(self, request, queryset):
        documents = list(queryset)
        for document in documents:
            services.document_reindex(document=document)
        self.message_user(request, f"{len(documents)} document{'s' if len(documents) != 1 else ''} queued for "
                                   "reprocessing.", messages.SUCCESS)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    """Chunks as the pipeline made them (read-only: they follow their document)."""

    list_display = ("id", "document_link", "ordinal", "token_count", "text_preview", "embedding_model")
    list_select_related = ("document",)
    search_fields = ("=id", "=document__id", "document__title")
    readonly_fields = ("id", "document_link", "ordinal", "version", "token_count", "embedding_model", "text")
    fields = readonly_fields
    show_full_result_count = False

    def lookup_allowed(self, lookup, value, request=None):
        # ?document__id__exact=N: the document page's "chunks" link.
        return lookup == "document__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="document", ordering="document__title")
    def document_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:ingestion_document_change", args=[obj.document_id]),
                           truncatechars(str(obj.document), 50))

    @admin.display(description="text")
    def text_preview(self, obj):
        return truncatechars(obj.text, 120)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
