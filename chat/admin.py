from django.contrib import admin

from chat.models import Citation, Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("question", "mode", "status", "stale", "first_token_ms", "total_ms", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "created_at", "updated_at")
    list_select_related = ("user",)
    list_filter = ("created_at",)
    search_fields = ("title", "user__username")
    raw_id_fields = ("user",)
    inlines = [MessageInline]


class CitationInline(admin.TabularInline):
    model = Citation
    fields = ("n", "chunk_id", "document_id", "title", "uri", "text")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "conversation", "mode", "model_name", "status", "stale", "first_token",
                    "total", "created_at")
    list_select_related = ("conversation",)
    list_filter = ("mode", "status", "stale", "model_name")
    search_fields = ("question", "answer")
    readonly_fields = ("conversation", "question", "answer", "mode", "status", "error", "retrieved", "prompt",
                       "prompt_tokens", "model_name", "invalid_citations", "retrieval_ms", "first_token_ms",
                       "total_ms", "stale", "created_at")
    inlines = [CitationInline]

    @admin.display(description="first token", ordering="first_token_ms")
    def first_token(self, obj):
        return _ms(obj.first_token_ms)

    @admin.display(description="answer", ordering="total_ms")
    def total(self, obj):
        return _ms(obj.total_ms)

    def has_add_permission(self, request):
        return False


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"
