from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q

from ingestion import selectors, services
from ingestion.models import Chunk, Document, Source


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "public", "documents_indexed", "documents_failed", "last_synced_at")
    list_filter = ("kind", "public")
    search_fields = ("name",)
    filter_horizontal = ("groups", "editor_groups")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            indexed=Count("documents", filter=Q(documents__status=Document.Status.INDEXED)),
            failed=Count("documents", filter=Q(documents__status=Document.Status.FAILED)),
        )

    @admin.display(description="indexed", ordering="indexed")
    def documents_indexed(self, obj):
        return obj.indexed

    @admin.display(description="failed", ordering="failed")
    def documents_failed(self, obj):
        return obj.failed


class DocumentForm(forms.ModelForm):
    upload = forms.FileField(required=False, help_text="Upload a file to create or replace the content.")

    class Meta:
        model = Document
        fields = ("source", "external_id", "title", "uri", "chunk_size", "chunk_overlap")

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("upload"):
            raise forms.ValidationError("Choose a file to upload.")
        upload = cleaned.get("upload")
        if upload and not cleaned.get("external_id"):
            cleaned["external_id"] = upload.name
        return cleaned


class ChunkInline(admin.TabularInline):
    model = Chunk
    fields = ("ordinal", "token_count", "text")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    form = DocumentForm
    list_display = ("__str__", "source", "status", "version", "chunk_count", "media_type", "uploaded_by",
                    "indexed_at", "updated_at")
    list_select_related = ("source", "uploaded_by")
    list_filter = ("status", "source", "media_type")
    search_fields = ("title", "external_id", "uri")
    readonly_fields = ("uploaded_by", "status", "error", "version", "media_type", "size", "content_hash",
                       "chunk_count", "indexed_at", "created_at", "updated_at")
    inlines = [ChunkInline]
    actions = ["reindex"]

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
        upload = form.cleaned_data.get("upload")
        if upload:
            result = services.document_ingest(
                source=form.cleaned_data["source"],
                external_id=form.cleaned_data["external_id"] or upload.name,
                content=upload.read(),
                filename=upload.name,
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
        for document in queryset:
            services.document_reindex(document=document)
        self.message_user(request, f"{queryset.count()} documents queued for reprocessing.", messages.SUCCESS)
