from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from feedback.models import ChunkFeedback, DocumentFeedback, EvaluationCase, Feedback
from feedback.services import evaluation_case_from_feedback
from ingestion.models import Document, Source


class SourceFilter(admin.SimpleListFilter):
    """Votes about a source's documents: on one of its passages, or on an answer citing one."""

    title = "source"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Source.objects.order_by("name").values_list("pk", "name")]

    def queryset(self, request, queryset):
        if not self.value() or not self.value().isdigit():
            return queryset
        documents = Document.objects.filter(source_id=int(self.value())).values("pk")
        return queryset.filter(
            Q(document_id__in=documents) | Q(chunk_id="", message__citations__document_id__in=documents)
        ).distinct()


class TallySourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Source.objects.order_by("name").values_list("pk", "name")]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(source_id=int(self.value()))
        return queryset


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """The review list: every vote, filtered by source, rating and reason."""

    list_display = ("__str__", "user", "rating", "reason", "question", "comment_short", "chunk_id", "document_id",
                    "updated_at")
    list_filter = (SourceFilter, "rating", "reason")
    search_fields = ("comment", "user__username", "chunk_id", "message__question")
    raw_id_fields = ("user", "message")
    readonly_fields = ("created_at", "updated_at")
    list_select_related = ("user", "message")
    actions = ["make_evaluation_cases"]

    @admin.display(description="question")
    def question(self, obj):
        return obj.message.question[:80]

    @admin.display(description="comment")
    def comment_short(self, obj):
        return obj.comment[:80]

    @admin.action(description="Make evaluation cases of the selected thumbs-down with a comment")
    def make_evaluation_cases(self, request, queryset):
        """Asks the reviewer which document is right for each question, then stores the cases
        (`manage.py evaluate_cases` runs them)."""
        candidates = list(queryset.filter(rating=Feedback.Rating.DOWN).exclude(comment="")
                          .select_related("message").order_by("pk"))
        if not candidates:
            self.message_user(request, "Select thumbs-down votes that have a comment: they say what was wrong.",
                              messages.WARNING)
            return None
        if "apply" in request.POST:
            made, problems = 0, []
            for feedback in candidates:
                raw = (request.POST.get(f"other_{feedback.pk}") or request.POST.get(f"document_{feedback.pk}")
                       or "").strip()
                if not raw:
                    continue
                document = Document.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
                if document is None:
                    problems.append(f"no document {raw!r} for vote {feedback.pk}")
                    continue
                evaluation_case_from_feedback(feedback=feedback, document=document, created_by=request.user)
                made += 1
            self.message_user(request, f"Made {made} evaluation case(s).", messages.SUCCESS)
            if problems:
                self.message_user(request, "Skipped: " + "; ".join(problems) + ".", messages.WARNING)
            return None
        rows = []
        for feedback in candidates:
            ids = [entry.get("document_id") for entry in feedback.message.retrieved if entry.get("document_id")]
            titles = dict(Document.objects.filter(pk__in=ids).values_list("pk", "title"))
            choices = [(pk, titles[pk]) for pk in dict.fromkeys(ids) if pk in titles]
            rows.append({"feedback": feedback, "choices": choices})
        context = {**self.admin_site.each_context(request), "title": "Make evaluation cases", "rows": rows,
                   "opts": self.model._meta, "action": "make_evaluation_cases",
                   "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
        return TemplateResponse(request, "admin/feedback/make_evaluation_cases.html", context)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DocumentFeedback)
class DocumentFeedbackAdmin(ReadOnlyAdmin):
    """Tallies per document, and what the consumer did about `outdated` and `incomplete`."""

    list_display = ("document_link", "source_id", "up", "down", "outdated", "wrong_source", "incomplete", "comments",
                    "refetch_status", "rechunk_requested_at", "last_vote_at")
    list_filter = (TallySourceFilter, "refetch_status")
    search_fields = ("title", "=document_id")
    ordering = ("-down", "-last_vote_at")

    def get_queryset(self, request):
        # Whether each tally's document still exists, in the list's own query (no query per row).
        return super().get_queryset(request).annotate(
            document_exists=Exists(Document.objects.filter(pk=OuterRef("document_id"))))

    @admin.display(description="document", ordering="title")
    def document_link(self, obj):
        if not getattr(obj, "document_exists", True):
            return f"{obj} (deleted)"
        url = reverse("admin:ingestion_document_change", args=[obj.document_id])
        return format_html('<a href="{}">{}</a>', url, str(obj))


@admin.register(ChunkFeedback)
class ChunkFeedbackAdmin(ReadOnlyAdmin):
    list_display = ("chunk_link", "document_link", "up", "down", "score_shown", "indexed_score_shown", "indexed_at")
    search_fields = ("=chunk_id", "=document_id")
    ordering = ("score",)
    readonly_fields = ("chunk_id", "document_id", "up", "down", "score_shown", "indexed_score_shown", "updated_at",
                       "indexed_at")
    fields = readonly_fields

    @admin.display(description="chunk", ordering="chunk_id")
    def chunk_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:ingestion_chunk_change", args=[obj.chunk_id]),
                           obj.chunk_id)

    @admin.display(description="document", ordering="document_id")
    def document_link(self, obj):
        if obj.document_id is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:ingestion_document_change", args=[obj.document_id]),
                           obj.document_id)

    @admin.display(description="score", ordering="score")
    def score_shown(self, obj):
        return f"{obj.score:+.2f}"

    @admin.display(description="score in the index", ordering="indexed_score")
    def indexed_score_shown(self, obj):
        return "—" if obj.indexed_score is None else f"{obj.indexed_score:+.2f}"


@admin.register(EvaluationCase)
class EvaluationCaseAdmin(admin.ModelAdmin):
    list_display = ("query_short", "document", "created_by", "created_at")
    list_select_related = ("document", "created_by")
    search_fields = ("query", "note")
    raw_id_fields = ("document", "feedback", "created_by")
    readonly_fields = ("created_at",)

    @admin.display(description="query")
    def query_short(self, obj):
        return obj.query[:100]
