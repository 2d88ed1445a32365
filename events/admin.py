from django.contrib import admin

from events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("time", "type", "subject", "source")
    list_filter = ("type",)
    search_fields = ("subject", "id")
    readonly_fields = ("id", "source", "type", "subject", "time", "data")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
