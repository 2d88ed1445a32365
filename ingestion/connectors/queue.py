"""`queue`: CloudEvents read from a broker queue by `manage.py events_consume` (events/intake/);
nothing to sync.

Config: `url` (any kombu transport URL: amqp://user:password@host:5672/vhost for RabbitMQ),
`queue` (declared durable if missing), and optionally `exchange` and `binding_key` (the queue is
bound to that topic exchange with that key, "#" when not given). What can never be taken goes
to the queue `<queue>.dead` with the reason.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.url import url_to_parts

from ingestion.connectors.base import ConfigInvalid, Connector, connector


@connector
class QueueConnector(Connector):
    kind = "queue"
    keys = {"url": True, "queue": True, "exchange": False, "binding_key": False}
    syncs = False

    def config_clean(self, config: dict[str, Any]) -> dict[str, Any]:
        cleaned = super().config_clean(config)
        errors: dict[str, list[str]] = {}
        for key in self.keys:
            if key in cleaned and not isinstance(cleaned[key], str):
                errors.setdefault(key, []).append("must be a string.")
        if not errors:
            try:
                parts = url_to_parts(cleaned["url"])
            except Exception:  # kombu raises whatever urllib does on a malformed URL
                parts = None
            if parts is None or "://" not in cleaned["url"] or not parts.scheme:
                errors["url"] = ["must be a broker URL such as amqp://user:password@host:5672/vhost."]
            if cleaned.get("binding_key") and not cleaned.get("exchange"):
                errors["binding_key"] = ["needs an exchange to bind the queue to."]
            if len(cleaned["queue"]) > 200:
                errors["queue"] = ["must be at most 200 characters."]
        if errors:
            raise ConfigInvalid(errors)
        cleaned.setdefault("exchange", "")
        if cleaned["exchange"]:
            cleaned.setdefault("binding_key", "#")
        return cleaned
