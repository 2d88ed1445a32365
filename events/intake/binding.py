"""CloudEvents 1.0 on the wire, read strictly: the HTTP protocol binding (binary, structured and
batch content modes, the mode decided by Content-Type as the binding says) and the AMQP binding
(binary: `cloudEvents:`/`cloudEvents_` application properties; structured), into validated
`Incoming` events. Everything invalid is an `EventInvalid` (400) with the reason.

Read here rather than with the SDK's `from_http`: that one guesses binary mode whenever a `ce-`
header is present, and its checks are laxer than the spec's (attribute names of any length,
`data` beside `data_base64`, any `time`). The SDK writes what Freshet sends (events/sinks/).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from config.exceptions import ApplicationError

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "specversion", "type")
STRING_ATTRIBUTES = ("datacontenttype", "dataschema", "subject")
NAME = re.compile(r"^[a-z0-9]{1,20}$")
# RFC 3339 date-time: a full date, "T" (or "t"/" "), a time with optional fraction, Z or an offset.
RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9.\-]+\+)?json$")
ID_MAX, SOURCE_MAX, TYPE_MAX = 256, 512, 128


class EventInvalid(ApplicationError):
    """The request or message is not a valid CloudEvent 1.0; the message says why."""

    status = 400


@dataclass(frozen=True)
class Incoming:
    """One validated CloudEvent: its context attributes (extensions included, `time` as the
    string it came as) and its data: a JSON value, a str, bytes, or None for none."""

    attributes: dict[str, Any]
    data: Any = None

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def source(self) -> str:
        return self.attributes["source"]

    @property
    def type(self) -> str:
        return self.attributes["type"]

    @property
    def subject(self) -> str:
        return self.attributes.get("subject", "")

    @property
    def media_type(self) -> str:
        """The data's media type without parameters, lower case ("" when not said)."""
        return media_type(self.attributes.get("datacontenttype", ""))


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    return bool(JSON_TYPE.match(media_type(content_type)))


def attributes_check(attributes: dict[str, Any], *, where: str = "") -> dict[str, Any]:
    """The context attributes, checked as the spec and the JSON format say; EventInvalid naming
    the first rule broken. Null values are absent (JSON format, 3.1)."""
    prefix = f"{where}: " if where else ""
    attributes = {name: value for name, value in attributes.items() if value is not None}
    for name in REQUIRED:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            raise EventInvalid(f"{prefix}the attribute '{name}' is required and must be a non-empty string.")
    if attributes["specversion"] != "1.0":
        raise EventInvalid(f"{prefix}specversion {attributes['specversion']!r} is not supported; send 1.0.")
    for name, limit in (("id", ID_MAX), ("source", SOURCE_MAX), ("type", TYPE_MAX)):
        if len(attributes[name]) > limit:
            raise EventInvalid(f"{prefix}the attribute '{name}' is longer than {limit} characters.")
    for name, value in attributes.items():
        if not NAME.match(name):
            raise EventInvalid(f"{prefix}attribute name {name!r} is invalid: names are lower-case letters and "
                               "digits, at most 20 characters.")
        if name in STRING_ATTRIBUTES and (not isinstance(value, str) or not value):
            raise EventInvalid(f"{prefix}the attribute '{name}' must be a non-empty string.")
        if isinstance(value, dict | list):
            raise EventInvalid(f"{prefix}the attribute '{name}' must be a string, a number or a boolean.")
    if "time" in attributes:
        time = attributes["time"]
        if not isinstance(time, str) or not RFC3339.match(time) or not _parses(time):
            raise EventInvalid(f"{prefix}time {time!r} is not an RFC 3339 timestamp (such as 2026-12-01T12:00:00Z).")
    return attributes


def _parses(time: str) -> bool:
    try:
        datetime.fromisoformat(time.replace("z", "Z").replace("t", "T").replace(" ", "T"))
    except ValueError:
        return False
    return True


def structured_event(value: Any, *, where: str = "") -> Incoming:
    """One event in the JSON event format (a structured body, a member of a batch)."""
    prefix = f"{where}: " if where else ""
    if not isinstance(value, dict):
        raise EventInvalid(f"{prefix}a CloudEvent in JSON is an object, not {type(value).__name__}.")
    attributes = dict(value)
    has_data, has_base64 = "data" in attributes, "data_base64" in attributes
    data = attributes.pop("data", None)
    encoded = attributes.pop("data_base64", None)
    if has_data and has_base64:
        raise EventInvalid(f"{prefix}an event has 'data' or 'data_base64', not both.")
    attributes = attributes_check(attributes, where=where)
    if encoded is not None:
        if not isinstance(encoded, str):
            raise EventInvalid(f"{prefix}data_base64 must be a base64 string.")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise EventInvalid(f"{prefix}data_base64 is not valid base64.") from None
    elif data is not None and "datacontenttype" not in attributes:
        attributes["datacontenttype"] = "application/json"  # JSON format 3.1: data is JSON then
    return Incoming(attributes=attributes, data=data)


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise EventInvalid(f"The body is not valid JSON ({what}): {error}.") from None


def binary_data(body: bytes, content_type: str) -> Any:
    """The data of a binary-mode message: JSON parsed for a JSON type, else the bytes."""
    if not body:
        return None
    if is_json(content_type):
        return _json(body, "the data of a binary-mode event with a JSON content type")
    return body


def http_events(headers: dict[str, str], body: bytes) -> tuple[str, list[Incoming]]:
    """(mode, events) of an HTTP request: the mode decided by Content-Type, as the binding says
    (3.1: structured and batch by their media types; anything else is binary, ce- headers or
    not). `headers` keys in lower case."""
    content_type = headers.get("content-type", "")
    kind = media_type(content_type)
    if kind == STRUCTURED:
        return "structured", [structured_event(_json(body, "structured mode"))]
    if kind == BATCH:
        events = _json(body, "batch mode")
        if not isinstance(events, list):
            raise EventInvalid("A batch (application/cloudevents-batch+json) is a JSON array of events.")
        return "batch", [structured_event(event, where=f"event {index}") for index, event in enumerate(events)]
    if kind.startswith("application/cloudevents"):
        raise EventInvalid(f"The event format {kind!r} is not supported; send application/cloudevents+json, "
                           "application/cloudevents-batch+json or a binary-mode event.")
    attributes: dict[str, Any] = {}
    for name, value in headers.items():
        if name.startswith("ce-"):
            attributes[name[3:]] = unquote(value)  # the binding's percent-encoding (3.1.3.2)
    if not attributes:
        raise EventInvalid("Not a CloudEvent: a binary-mode event needs ce-id, ce-source, ce-specversion and ce-type "
                           f"headers; or send Content-Type {STRUCTURED} or {BATCH}.")
    if "datacontenttype" in attributes:
        raise EventInvalid("In binary mode the data's type is the Content-Type header, not ce-datacontenttype.")
    if content_type:
        attributes["datacontenttype"] = content_type
    attributes = attributes_check(attributes)
    return "binary", [Incoming(attributes=attributes, data=binary_data(body, content_type))]


def amqp_event(*, headers: dict[str, Any] | None, content_type: str | None, body: bytes) -> Incoming:
    """One event from an AMQP message: structured when its content type is the JSON event
    format's, else binary with the attributes in `cloudEvents:` (or `cloudEvents_`)
    application properties (headers, in AMQP 0-9-1)."""
    content_type = content_type or ""
    if media_type(content_type) == STRUCTURED:
        return structured_event(_json(body, "structured mode"))
    attributes: dict[str, Any] = {}
    for name, value in (headers or {}).items():
        for prefix in ("cloudEvents:", "cloudEvents_"):
            if name.startswith(prefix):
                value = value.decode() if isinstance(value, bytes) else value
                if isinstance(value, datetime):  # an AMQP timestamp
                    value = value.isoformat().replace("+00:00", "Z")
                attributes[name[len(prefix):]] = value
    if not attributes:
        raise EventInvalid("Not a CloudEvent: no cloudEvents: application properties, and the content type is "
                           f"not {STRUCTURED}.")
    if content_type:
        attributes["datacontenttype"] = content_type
    attributes = attributes_check(attributes)
    return Incoming(attributes=attributes, data=binary_data(body, content_type))
