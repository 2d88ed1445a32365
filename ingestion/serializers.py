"""Input and output serializers of the ingestion REST API (ingestion/apis.py).

Inputs validate and return plain values for a service; outputs render rows. Neither writes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ingestion.connectors import ConfigInvalid, config_clean, connector_for
from ingestion.models import Document, Source, SyncRun

# Bounds that keep every accepted value storable (PostgreSQL integers) and meaningful.
MAX_CHUNK_TOKENS = 8192
MAX_SCHEDULE_MINUTES = 366 * 24 * 60
MAX_ID = 2**63 - 1


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong and what to do about it.")
    errors = serializers.DictField(
        required=False, child=serializers.JSONField(),
        help_text="For invalid input: the messages of each field, by field name.",
    )


# --- Sources --------------------------------------------------------------------------------


class DocumentCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField(source="count_pending")
    processing = serializers.IntegerField(source="count_processing")
    indexed = serializers.IntegerField(source="count_indexed")
    failed = serializers.IntegerField(source="count_failed")


class ChunkingSerializer(serializers.Serializer):
    size = serializers.IntegerField(help_text="Tokens per chunk in effect.")
    overlap = serializers.IntegerField(help_text="Tokens shared by neighbouring chunks in effect.")


class SourceOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=Source.Kind.choices)
    config = serializers.SerializerMethodField(
        help_text="Connector settings; shown to staff only (it can hold credentials), null for others."
    )
    public = serializers.BooleanField()
    groups = serializers.ListField(child=serializers.CharField(), source="group_names",
                                   help_text="Groups that may see the source when it is not public.")
    editor_groups = serializers.ListField(
        child=serializers.CharField(), source="editor_group_names",
        help_text="Groups whose members may replace or delete any document of the source, not only their own.",
    )
    chunk_size = serializers.IntegerField(allow_null=True, help_text="Null: the server default.")
    chunk_overlap = serializers.IntegerField(allow_null=True, help_text="Null: the server default.")
    chunking = serializers.SerializerMethodField()
    schedule_minutes = serializers.IntegerField(allow_null=True)
    prune = serializers.BooleanField(help_text="Whether a sync deletes the documents whose items are gone.")
    document_counts = DocumentCountsSerializer(source="*", help_text="Documents of the source by status.")
    last_synced_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    @extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
    def get_config(self, source: Source) -> dict | None:
        request = self.context.get("request")
        if request is None or not request.user.is_staff:
            return None
        # Write-only keys (a push source's secret) are shown once, in the answer to the create.
        hidden = () if self.context.get("created") else _write_only(source.kind)
        return {key: value for key, value in (source.config or {}).items() if key not in hidden}

    @extend_schema_field(ChunkingSerializer)
    def get_chunking(self, source: Source) -> dict[str, int]:
        size, overlap = source.chunking
        return {"size": size, "overlap": overlap}


# JSON input is typed: DRF's fields would also take "yes"/1 for true, "16" or 16.0 for 16 and 5 for
# "5" (they are made for HTML forms); a JSON endpoint should say the type is wrong instead.


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _reject_unstorable(value: Any, path: str = "config") -> None:
    """PostgreSQL's jsonb cannot hold NUL characters; say where one is instead of failing."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(f"{path} contains a NUL character.")
    elif isinstance(value, dict):
        for key, inner in value.items():
            _reject_unstorable(key, f"{path} key")
            _reject_unstorable(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _reject_unstorable(inner, f"{path}[{index}]")


def _existing_groups(names: list[str]) -> list[Group]:
    wanted = set(names)
    groups = list(Group.objects.filter(name__in=wanted))
    missing = sorted(wanted - {group.name for group in groups})
    if missing:
        raise serializers.ValidationError(f"Unknown groups: {', '.join(missing)}. Create them first (in the admin).")
    return groups


class SourceInputSerializer(serializers.Serializer):
    """Create a source (all fields but `name` optional), or with partial=True change some of
    one; pass the source being changed as context["source"]."""

    name = StrictCharField(max_length=200)
    kind = serializers.ChoiceField(choices=Source.Kind.choices, default=Source.Kind.UPLOAD)
    config = serializers.DictField(default=dict, help_text="Connector settings (url, path, ...).")
    public = StrictBooleanField(default=True, help_text="Visible to every signed-in user.")
    groups = serializers.ListField(
        child=StrictCharField(max_length=150), default=list, max_length=1000,
        help_text="Names of existing groups that may see the source when it is not public.",
    )
    editor_groups = serializers.ListField(
        child=StrictCharField(max_length=150), default=list, max_length=1000,
        help_text="Names of existing groups whose members may replace or delete any document of the source "
                  "(others only their own). Members must also be able to see the source.",
    )
    chunk_size = StrictIntegerField(min_value=16, max_value=MAX_CHUNK_TOKENS, allow_null=True, default=None,
                                    help_text="Tokens per chunk; null for the server default.")
    chunk_overlap = StrictIntegerField(min_value=0, max_value=MAX_CHUNK_TOKENS, allow_null=True, default=None,
                                       help_text="Tokens shared by neighbours; null for the server default.")
    schedule_minutes = StrictIntegerField(min_value=1, max_value=MAX_SCHEDULE_MINUTES, allow_null=True,
                                          default=None, help_text="Re-sync every N minutes; null for never.")
    prune = StrictBooleanField(default=True, help_text="A sync deletes the documents whose items are gone from "
                                                       "the source (false: they stay).")

    def validate_name(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise serializers.ValidationError("The name cannot be blank.")
        others = Source.objects.filter(name=name)
        if self.context.get("source") is not None:
            others = others.exclude(pk=self.context["source"].pk)
        if others.exists():
            raise serializers.ValidationError(f"A source named {name!r} already exists; choose another name.")
        return name

    def validate_config(self, config: dict) -> dict:
        _reject_unstorable(config)
        return config

    def validate_groups(self, names: list[str]) -> list[Group]:
        return _existing_groups(names)

    def validate_editor_groups(self, names: list[str]) -> list[Group]:
        return _existing_groups(names)

    def validate(self, attrs: dict) -> dict:
        source: Source | None = self.context.get("source")
        size = attrs["chunk_size"] if "chunk_size" in attrs else (source.chunk_size if source else None)
        overlap = attrs["chunk_overlap"] if "chunk_overlap" in attrs else (source.chunk_overlap if source else None)
        size = size or settings.CHUNK_SIZE_TOKENS
        if overlap is not None and overlap >= size:
            raise serializers.ValidationError(
                {"chunk_overlap": f"The overlap ({overlap}) must be smaller than the chunk size ({size})."}
            )
        if "kind" in attrs or "config" in attrs or source is None:
            kind = attrs.get("kind", source.kind if source else Source.Kind.UPLOAD)
            config = attrs.get("config", source.config if source else {})
            if source is not None and kind == source.kind and isinstance(config, dict):
                # A write-only key left out of a change is kept, not replaced (or regenerated).
                kept = {key: source.config[key] for key in _write_only(kind)
                        if key not in config and key in (source.config or {})}
                config = {**config, **kept}
            attrs["config"] = source_config_clean(kind, config)
        return attrs


def _write_only(kind: str) -> tuple[str, ...]:
    try:
        return connector_for(kind).write_only
    except ConfigInvalid:  # a kind without a connector (yet) has none
        return ()


def source_config_clean(kind: str, config: Any) -> dict:
    """The connector's own check of a source's configuration (ingestion/connectors: each kind's
    `config_clean`), as a serializer error naming each bad key."""
    try:
        return config_clean(kind, config)
    except ConfigInvalid as error:
        if set(error.errors) == {"kind"}:
            raise serializers.ValidationError({"kind": error.errors["kind"]}) from None
        raise serializers.ValidationError({"config": [
            f"{key}: {' '.join(messages)}" for key, messages in error.errors.items()
        ]}) from None


# --- Documents ------------------------------------------------------------------------------


class DocumentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.IntegerField(source="source_id")
    external_id = serializers.CharField(help_text="The document's id in its source.")
    uploaded_by = serializers.SerializerMethodField(
        help_text="The username of who uploaded it; null for the system (a connector, the CLI) or a deleted user. "
                  "Others may not replace or delete it unless they edit its source or are staff."
    )
    title = serializers.CharField()
    filename = serializers.CharField(help_text="The name it was uploaded with (metadata only).")
    uri = serializers.CharField()
    media_type = serializers.CharField(help_text="Detected from the content once parsed.")
    size = serializers.IntegerField(help_text="Bytes.")
    content_hash = serializers.CharField(help_text="SHA-256 of the content.")
    version = serializers.IntegerField(help_text="Goes up with every change of content or reindex.")
    status = serializers.ChoiceField(choices=Document.Status.choices)
    error = serializers.CharField(help_text="Why it failed, when status is failed.")
    chunk_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    indexed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field({"type": "string", "nullable": True})
    def get_uploaded_by(self, document: Document) -> str | None:
        return document.uploaded_by.get_username() if document.uploaded_by_id else None


class DocumentUploadInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="At most MAX_UPLOAD_BYTES (default 25 MB); plain text, Markdown, HTML, "
                                           "PDF or DOCX, detected from the content.")
    source = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Id of a source you can see.")
    title = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                  help_text="Empty: taken from the document, else its file name.")
    external_id = serializers.CharField(
        max_length=1024, required=False, allow_blank=True,
        help_text="The document's id in the source; uploading again with the same id updates that "
                  "document. Empty: the file name.",
    )


class DocumentBulkUploadInputSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True), min_length=1,
        help_text="The files; each becomes (or updates) the document whose external id is its file name.",
    )
    source = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Id of a source you can see.")

    def validate_files(self, files: list) -> list:
        if len(files) > settings.BULK_UPLOAD_MAX_FILES:
            raise serializers.ValidationError(
                f"At most {settings.BULK_UPLOAD_MAX_FILES} files per request (BULK_UPLOAD_MAX_FILES); "
                f"got {len(files)}. Send them in several requests."
            )
        return files


class RejectedFileSerializer(serializers.Serializer):
    filename = serializers.CharField()
    status = serializers.IntegerField(help_text="The HTTP status this file alone would have got.")
    detail = serializers.CharField()


class DocumentBulkOutputSerializer(serializers.Serializer):
    documents = DocumentOutputSerializer(many=True, help_text="Documents created or updated.")
    rejected = RejectedFileSerializer(many=True, help_text="Files refused, each with the reason.")


class BulkRejectedSerializer(ErrorSerializer):
    rejected = RejectedFileSerializer(many=True, required=False,
                                      help_text="When every file was refused: each file with its reason.")


class PageQuerySerializer(serializers.Serializer):
    """Query parameters of a list. A parameter sent empty (`?status=`) is an error, not "not
    given", and so is one the list does not take (`?stauts=failed`): DRF would otherwise ignore
    either silently and answer with everything."""

    page = serializers.IntegerField(min_value=1, required=False, help_text="Page number, from 1.")

    # DRF's own: `?format=json` picks the renderer.
    GENERIC_PARAMETERS = frozenset({"format"})

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields) - self.GENERIC_PARAMETERS)
        if unknown:
            taken = ", ".join(sorted(self.fields))
            raise serializers.ValidationError(
                {name or "(empty name)": [f"Not a parameter of this list; it takes {taken}."] for name in unknown})
        blank = [name for name in self.fields if name in data and data.get(name) == ""]
        if blank:
            raise serializers.ValidationError({name: ["Give a value, or leave the parameter out."] for name in blank})
        return super().to_internal_value(data)


class DocumentFilterSerializer(PageQuerySerializer):
    source = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False,
                                      help_text="Only documents of this source.")
    status = serializers.ChoiceField(choices=Document.Status.choices, required=False,
                                     help_text="Only documents with this status.")


class ChunkOutputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Document id and ordinal.")
    ordinal = serializers.IntegerField()
    text = serializers.CharField()
    token_count = serializers.IntegerField()
    embedding_model = serializers.CharField()
    version = serializers.IntegerField(help_text="The document version these chunks were made from.")


# --- Syncs ----------------------------------------------------------------------------------


class SyncRunOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.IntegerField(source="source_id")
    trigger = serializers.CharField(help_text="What started it: api, admin, cli, schedule, watch, ...")
    status = serializers.ChoiceField(choices=SyncRun.Status.choices,
                                     help_text="running, then succeeded, partial (some items failed) or failed.")
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    items_seen = serializers.IntegerField(help_text="Items the source listed.")
    items_new = serializers.IntegerField()
    items_changed = serializers.IntegerField()
    items_unchanged = serializers.IntegerField(help_text="Items that cost no pipeline work.")
    items_deleted = serializers.IntegerField(help_text="Documents deleted because their items were gone.")
    items_failed = serializers.IntegerField()
    error = serializers.SerializerMethodField(
        help_text="Why the sync failed, or its first item failures; shown to staff only (it can name internal "
                  "addresses), null for others.")

    @extend_schema_field({"type": "string", "nullable": True})
    def get_error(self, run: SyncRun) -> str | None:
        request = self.context.get("request")
        return run.error if request is not None and request.user.is_staff else None
