"""`upload`: documents uploaded by people (admin, REST API, `manage.py ingest`); nothing to sync."""

from __future__ import annotations

from ingestion.connectors.base import Connector, connector


@connector
class UploadConnector(Connector):
    kind = "upload"
    keys: dict[str, bool] = {}
    syncs = False
