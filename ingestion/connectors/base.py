"""The one small interface every source kind implements.

A connector lists its source's items, each with a stable external id and a change marker, and
fetches one item. The sync (ingestion/connectors/sync.py) diffs the listing against the
source's documents — the durable manifest of external id → marker — so unchanged items cost no
pipeline work and items gone from the source are deleted (unless the source's `prune` is off).
Kinds whose documents are sent to Freshet rather than fetched (upload, push, queue) validate
their configuration here too and list nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from config.exceptions import ApplicationError


class ConfigInvalid(ApplicationError):
    """A source's configuration is not usable; `errors` maps each config key to its messages."""

    status = 400

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(" ".join(f"config.{key}: {' '.join(messages)}" for key, messages in errors.items()))


class ItemFailed(Exception):
    """One item cannot be fetched or taken (a 404, a body too large, robots.txt disallows it):
    recorded on the sync run with its message; the other items go on."""


class SourceUnavailable(Exception):
    """The source cannot be listed at all (its server down, malformed XML, a folder gone): the
    sync run fails with this message and nothing is pruned."""


@dataclass(frozen=True)
class Item:
    """One item of a source's listing. `marker` changes whenever the item does ("" when the
    listing cannot tell: the item is fetched and its content hash decides)."""

    external_id: str
    marker: str = ""
    uri: str = ""
    title: str = ""


@dataclass(frozen=True)
class Fetched:
    """One fetched item. `content` None: the source answered "not modified" (a 304)."""

    content: bytes | None
    marker: str = ""
    title: str = ""
    uri: str = ""
    filename: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class Connector:
    """A source kind. Subclasses set `kind`, `keys` (the config keys they take, with whether each
    is required) and implement `config_clean`, and for kinds that sync, `items` and `fetch`."""

    kind: ClassVar[str]
    keys: ClassVar[dict[str, bool]] = {}
    syncs: ClassVar[bool] = True
    # Config keys never shown by the API once set (secrets); a change that leaves one out keeps it.
    write_only: ClassVar[tuple[str, ...]] = ()

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        """The configuration normalised, or ConfigInvalid naming each bad key and why."""
        if not isinstance(config, dict):
            raise ConfigInvalid({"config": ["must be a JSON object."]})
        errors: dict[str, list[str]] = {}
        for key in config:
            if key not in self.keys:
                accepted = ", ".join(sorted(self.keys)) or "none"
                errors.setdefault(key, []).append(f"unknown key for a {self.kind} source (accepted: {accepted}).")
        for key, required in self.keys.items():
            if required and config.get(key) in (None, ""):
                errors.setdefault(key, []).append(f"is required for a {self.kind} source.")
        if errors:
            raise ConfigInvalid(errors)
        return dict(config)

    def items(self, source) -> Iterator[Item]:
        """Every item the source holds now (SourceUnavailable if it cannot be listed)."""
        raise NotImplementedError

    def fetch(self, source, item: Item, *, document=None) -> Fetched:
        """One item's content. `document` is Freshet's copy, if any (its marker and metadata allow
        a conditional request). ItemFailed for this item alone; TransientError (events.errors)
        for what may pass."""
        raise NotImplementedError


CONNECTORS: dict[str, Connector] = {}


def connector(cls: type[Connector]) -> type[Connector]:
    """Register a connector class under its kind."""
    CONNECTORS[cls.kind] = cls()
    return cls


def connector_for(kind: str) -> Connector:
    from ingestion import connectors  # noqa: F401  (importing the package registers every kind)

    try:
        return CONNECTORS[kind]
    except KeyError:
        raise ConfigInvalid({"kind": [f"unknown source kind {kind!r}."]}) from None


def config_clean(kind: str, config: Any) -> dict[str, Any]:
    """`config` validated and normalised for a source of `kind` (ConfigInvalid otherwise)."""
    return connector_for(kind).config_clean(config)
