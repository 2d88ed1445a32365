"""Source kinds: one module per kind behind the interface of base.py. Importing the package
registers every kind (each module adds itself with @connector); add a new kind's module to the
import below."""

from ingestion.connectors import feed, folder, push, queue, sitemap, upload, url  # noqa: F401  (register the kinds)
from ingestion.connectors.base import (
    ConfigInvalid,
    Connector,
    Fetched,
    Item,
    ItemFailed,
    SourceUnavailable,
    config_clean,
    connector_for,
)

__all__ = [
    "ConfigInvalid", "Connector", "Fetched", "Item", "ItemFailed", "SourceUnavailable", "config_clean",
    "connector_for",
]
