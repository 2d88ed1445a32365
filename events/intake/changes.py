"""What a pushed event does to a source's documents, decided before it is recorded so that a bad
event is refused (400/422, or the dead-letter queue) instead of failing later:

- `freshet.document.upsert`: data {external_id, title?, content | content_base64 + content_type,
  uri?, metadata?} creates or replaces that document;
- `freshet.document.delete`: data {external_id} deletes it;
- any other type, on a source with `events_as_documents`: the event becomes a document, its
  external id the subject (else source + "/" + id), its title the subject or type, its text the
  data (text as it is, JSON rendered readably, XML's text, binary through the parsers by its
  media type), its attributes in the document's metadata.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from config.exceptions import ApplicationError
from events.intake.binding import EventInvalid, Incoming

UPSERT = "freshet.document.upsert"
DELETE = "freshet.document.delete"
ACCEPTED = (UPSERT, DELETE)
EXTERNAL_ID_MAX = 1024

# A file name hint for the parsers (they detect the type from the content; the name breaks ties
# between plain-text flavours).
_FILENAMES = {
    "text/markdown": "event.md", "text/html": "event.html", "application/xhtml+xml": "event.html",
    "application/pdf": "event.pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "event.docx",
}


class TypeNotAccepted(ApplicationError):
    """The source takes no events of this type (422 naming the accepted ones)."""

    status = 422


@dataclass(frozen=True)
class Change:
    action: str  # "upsert" or "delete"
    external_id: str
    title: str = ""
    uri: str = ""
    filename: str = ""
    content: bytes = b""
    metadata: dict[str, Any] = field(default_factory=dict)


def change_for(event: Incoming, *, events_as_documents: bool, where: str = "") -> Change:
    """The change `event` makes, or EventInvalid / TypeNotAccepted saying why it makes none."""
    prefix = f"{where}: " if where else ""
    if event.type == UPSERT:
        return _upsert(event, prefix)
    if event.type == DELETE:
        data = _object_data(event, prefix)
        return Change(action="delete", external_id=_external_id(data, prefix))
    if not events_as_documents:
        raise TypeNotAccepted(
            f"{prefix}this source takes no events of type {event.type!r}; the accepted types are "
            f"{', '.join(ACCEPTED)} (or set \"events_as_documents\": true in the source's config to make "
            "every other event a document)."
        )
    return _as_document(event, prefix)


def _object_data(event: Incoming, prefix: str) -> dict[str, Any]:
    if not isinstance(event.data, dict):
        raise EventInvalid(f"{prefix}a {event.type} event's data must be a JSON object (datacontenttype "
                           "application/json).")
    return event.data


def _external_id(data: dict[str, Any], prefix: str) -> str:
    value = data.get("external_id")
    if not isinstance(value, str) or not value.strip():
        raise EventInvalid(f"{prefix}data.external_id is required and must be a non-empty string.")
    if len(value) > EXTERNAL_ID_MAX:
        raise EventInvalid(f"{prefix}data.external_id is longer than {EXTERNAL_ID_MAX} characters.")
    return value


def _string(data: dict[str, Any], key: str, prefix: str, limit: int) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EventInvalid(f"{prefix}data.{key} must be a string.")
    if len(value) > limit:
        raise EventInvalid(f"{prefix}data.{key} is longer than {limit} characters.")
    return value


def _upsert(event: Incoming, prefix: str) -> Change:
    data = _object_data(event, prefix)
    external_id = _external_id(data, prefix)
    title = _string(data, "title", prefix, 500)
    uri = _string(data, "uri", prefix, 2048)
    content_type = _string(data, "content_type", prefix, 200).split(";", 1)[0].strip().lower()
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise EventInvalid(f"{prefix}data.metadata must be a JSON object.")
    has_text, has_base64 = data.get("content") is not None, data.get("content_base64") is not None
    if has_text == has_base64:
        raise EventInvalid(f"{prefix}a {UPSERT} event's data has 'content' (text) or 'content_base64' with "
                           "'content_type', exactly one of them.")
    if has_text:
        if not isinstance(data["content"], str):
            raise EventInvalid(f"{prefix}data.content must be a string (send bytes as content_base64).")
        content = data["content"].encode()
    else:
        if not content_type:
            raise EventInvalid(f"{prefix}data.content_type is required with content_base64.")
        try:
            content = base64.b64decode(data["content_base64"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise EventInvalid(f"{prefix}data.content_base64 is not valid base64.") from None
    if not content:
        raise EventInvalid(f"{prefix}the content is empty; send freshet.document.delete to remove a document.")
    return Change(action="upsert", external_id=external_id, title=title, uri=uri,
                  filename=_FILENAMES.get(content_type, ""), content=content,
                  metadata={**metadata, "cloudevent": event.attributes})


def _as_document(event: Incoming, prefix: str) -> Change:
    external_id = event.subject or f"{event.source}/{event.id}"
    if len(external_id) > EXTERNAL_ID_MAX:
        raise EventInvalid(f"{prefix}the document's external id (subject, or source/id) is longer than "
                           f"{EXTERNAL_ID_MAX} characters.")
    media_type, data, filename = event.media_type, event.data, "event.txt"
    if data is None or data in (b"", ""):
        content = f"{event.type}\n{event.subject}".strip().encode()
    elif isinstance(data, bytes | str) and (media_type in ("application/xml", "text/xml")
                                            or media_type.endswith("+xml")):
        content = xml_text(data, prefix).encode()
    elif isinstance(data, bytes):
        content, filename = data, _FILENAMES.get(media_type, "")
    elif isinstance(data, str):
        content, filename = data.encode(), _FILENAMES.get(media_type, "event.txt")
    else:  # a JSON value (structured data, or a binary body of a JSON type)
        content = json_text(data).encode()
    if not content.strip():
        content = f"{event.type}\n{event.subject}".strip().encode()
    return Change(action="upsert", external_id=external_id, title=(event.subject or event.type)[:500],
                  filename=filename, content=content, metadata={"cloudevent": event.attributes})


def xml_text(data: bytes | str, prefix: str = "") -> str:
    """The text of an XML document, its elements' text in document order (entities refused)."""
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, DefusedXmlException) as error:
        raise EventInvalid(f"{prefix}the data is not well-formed XML ({error}).") from None
    return "\n".join(text.strip() for text in root.itertext() if text.strip())


def json_text(value: Any, indent: int = 0) -> str:
    """A JSON value as readable text: one `key: value` line per member, nested ones indented,
    list items as `- ` lines; so its words are searchable and a passage reads well."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, inner in value.items():
            if isinstance(inner, dict | list) and inner:
                lines.append(f"{pad}{key}:")
                lines.append(json_text(inner, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(inner)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for inner in value:
            if isinstance(inner, dict | list) and inner:
                lines.append(f"{pad}-")
                lines.append(json_text(inner, indent + 1))
            else:
                lines.append(f"{pad}- {_scalar(inner)}")
        return "\n".join(lines)
    return f"{pad}{_scalar(value)}"


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return ""
    return str(value)
