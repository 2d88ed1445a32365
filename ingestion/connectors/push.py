"""`push`: CloudEvents pushed to `POST /api/events/` (events/intake/); nothing to sync.

Config: `secret`, the key that authenticates the pushes (as `Authorization: Bearer SECRET` or as
the Standard Webhooks signing key); generated when not given, and write-only in the API.
`events_as_documents`: true makes every event of another type than freshet.document.upsert and
.delete a document of its own (an event stream: tickets, orders, alerts).
"""

from __future__ import annotations

from typing import Any

from events.webhooks import secret_new, secret_problem
from ingestion.connectors.base import ConfigInvalid, Connector, connector


@connector
class PushConnector(Connector):
    kind = "push"
    keys = {"secret": False, "events_as_documents": False}
    syncs = False
    write_only = ("secret",)

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        cleaned = super().config_clean(config)
        errors: dict[str, list[str]] = {}
        if cleaned.get("secret") in (None, ""):
            cleaned["secret"] = secret_new()
        elif problem := secret_problem(cleaned["secret"]):
            errors["secret"] = [problem]
        as_documents = cleaned.setdefault("events_as_documents", False)
        if not isinstance(as_documents, bool):
            errors["events_as_documents"] = ["must be true or false."]
        if errors:
            raise ConfigInvalid(errors)
        return cleaned
