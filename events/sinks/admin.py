"""Admin for event sinks, their deliveries and the pushed events received (registered from
events/admin.py)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from events.models import Delivery, EventSink, ReceivedEvent
from events.serializers import SinkInputSerializer, url_shown
from events.sinks.services import sink_test_send
from events.webhooks import secret_new, secret_problem


class EventSinkForm(forms.ModelForm):
    # The key is write-only: never shown again after it is set; empty keeps the one there.
    new_secret = forms.CharField(
        required=False, label="Signing key", widget=forms.PasswordInput(render_value=False),
        help_text="A Standard Webhooks key (whsec_...). Empty: generated for a new sink (shown once), kept for an "
                  "existing one.",
    )

    class Meta:
        model = EventSink
        fields = ["name", "kind", "url", "types", "mode", "exchange", "routing_key", "enabled"]

    def clean_new_secret(self) -> str:
        value = self.cleaned_data.get("new_secret", "")
        if value and (problem := secret_problem(value)):
            raise forms.ValidationError(f"The key {problem}")
        return value

    def clean(self):
        cleaned = super().clean()
        data = {key: cleaned.get(key) for key in ("name", "kind", "url", "types", "mode", "exchange", "routing_key")}
        serializer = SinkInputSerializer(self.instance if self.instance.pk else None, data=data)
        if not serializer.is_valid():
            for field, errors in serializer.errors.items():
                target = field if field in self.fields else None
                for error in errors if isinstance(errors, list) else [errors]:
                    self.add_error(target, str(error))
        return cleaned


@admin.register(EventSink)
class EventSinkAdmin(admin.ModelAdmin):
    form = EventSinkForm
    list_display = ("name", "kind", "shown_url", "types", "mode", "enabled", "deliveries_link")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "url")
    readonly_fields = ("disabled_reason", "created_at", "updated_at")
    actions = ["send_test_event"]

    @admin.display(description="url")
    def shown_url(self, sink: EventSink) -> str:
        return url_shown(sink.url)

    @admin.display(description="deliveries")
    def deliveries_link(self, sink: EventSink) -> str:
        url = reverse("admin:events_delivery_changelist") + f"?sink__id__exact={sink.pk}"
        return format_html('<a href="{}">deliveries</a>', url)

    def save_model(self, request, obj: EventSink, form, change: bool) -> None:
        given = form.cleaned_data.get("new_secret")
        if given:
            obj.secret = given
        elif not obj.secret:
            obj.secret = secret_new()
            messages.warning(request, f"The signing key of {obj.name} is {obj.secret} — shown this once; give it to "
                                      "the receiver now.")
        if obj.enabled:
            obj.disabled_reason = ""
        super().save_model(request, obj, form, change)

    @admin.action(description="Send a test event")
    def send_test_event(self, request, queryset) -> None:
        for sink in queryset:
            event = sink_test_send(sink=sink)
            messages.info(request, f"Test event {event.pk} queued for {sink.name}; see its deliveries.")


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "sink", "event_type", "attempt", "status", "status_code", "duration_ms", "error")
    list_filter = ("status", "sink")
    search_fields = ("=event__id",)
    list_select_related = ("sink", "event")
    readonly_fields = [field.name for field in Delivery._meta.fields]

    @admin.display(description="event type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ReceivedEvent)
class ReceivedEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "source", "type", "ce_source", "ce_id", "action", "external_id", "status", "via")
    list_filter = ("status", "via", "action", "source")
    list_select_related = ("source",)
    search_fields = ("=ce_id", "external_id")
    exclude = ("content",)
    readonly_fields = [field.name for field in ReceivedEvent._meta.fields if field.name != "content"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
