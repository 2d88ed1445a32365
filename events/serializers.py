"""Input and output of the events API: the intake's answer, sinks and their deliveries."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import httpx
from rest_framework import serializers

from config.outbound import OutboundRefused, url_check
from events.models import Delivery, EventSink
from events.webhooks import secret_problem

TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


class IntakeOutputSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events recorded now; their changes follow within moments.")
    duplicates = serializers.IntegerField(help_text="Events recorded before (same source and id): nothing done.")
    mode = serializers.ChoiceField(choices=["binary", "structured", "batch"])
    source = serializers.CharField(help_text="The push source the request authenticated as.")


class SinkInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=EventSink.Kind.choices, default=EventSink.Kind.HTTP)
    url = serializers.CharField(max_length=2048)
    types = serializers.ListField(child=serializers.CharField(max_length=128), min_length=1, max_length=100,
                                  help_text='Event types to send; "*" for every type.')
    secret = serializers.CharField(max_length=200, required=False, write_only=True,
                                   help_text="A Standard Webhooks key (whsec_...); generated when not given, "
                                             "shown once in the answer to the create.")
    mode = serializers.ChoiceField(choices=EventSink.Mode.choices, default=EventSink.Mode.STRUCTURED)
    exchange = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    routing_key = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField(default=True)

    def validate_name(self, value: str) -> str:
        taken = EventSink.objects.filter(name=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError(f"A sink named {value!r} exists already; choose another name.")
        return value

    def validate_types(self, value: list[str]) -> list[str]:
        for event_type in value:
            if event_type != "*" and not TYPE_PATTERN.match(event_type):
                raise serializers.ValidationError(f"{event_type!r} is not an event type (such as "
                                                  "freshet.document.indexed) nor \"*\".")
        return list(dict.fromkeys(value))

    def validate_secret(self, value: str) -> str:
        problem = secret_problem(value)
        if problem:
            raise serializers.ValidationError(f"The secret {problem}")
        return value

    def validate(self, attrs: dict) -> dict:
        merged = {**(self._current() if self.instance is not None else {}), **attrs}
        kind, url = merged.get("kind", EventSink.Kind.HTTP), merged.get("url", "")
        scheme = urlsplit(url).scheme.lower()
        if kind == EventSink.Kind.HTTP:
            try:
                url_check(url)
            except OutboundRefused as error:
                raise serializers.ValidationError({"url": [str(error)]}) from None
            except httpx.HTTPError as error:
                raise serializers.ValidationError({"url": [f"{error}; give a host that resolves."]}) from None
        else:
            if scheme not in ("amqp", "amqps", "pyamqp"):
                raise serializers.ValidationError({"url": ["A queue sink's url is amqp://user:password@host:5672/vhost."]})
            if not merged.get("exchange"):
                raise serializers.ValidationError({"exchange": ["A queue sink publishes to an exchange: name it."]})
        return attrs

    def _current(self) -> dict:
        sink = self.instance
        return {"kind": sink.kind, "url": sink.url, "exchange": sink.exchange}


def url_shown(url: str) -> str:
    """The URL without its password (a broker URL carries one)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class SinkOutputSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = EventSink
        fields = ["id", "name", "kind", "url", "types", "mode", "exchange", "routing_key", "enabled",
                  "disabled_reason", "created_at", "updated_at"]

    def get_url(self, sink: EventSink) -> str:
        return url_shown(sink.url)


class SinkCreatedOutputSerializer(SinkOutputSerializer):
    secret = serializers.CharField(help_text="The signing key: shown this once; keep it with the receiver.")

    class Meta(SinkOutputSerializer.Meta):
        fields = [*SinkOutputSerializer.Meta.fields, "secret"]


class DeliveryOutputSerializer(serializers.ModelSerializer):
    event_type = serializers.CharField(source="event.type")

    class Meta:
        model = Delivery
        fields = ["id", "event_id", "event_type", "attempt", "status", "status_code", "duration_ms", "error",
                  "next_attempt_at", "created_at"]
