"""One event onto the wire to one sink; what happened comes back as a `Sent`, never raised.

- http: a POST as a CloudEvent (the SDK's HTTP binding, structured or binary) with Standard
  Webhooks headers (`webhook-id` = the event id, so receivers dedupe retries), through the
  outbound guard (config/outbound.py), redirects not followed, SINK_TIMEOUT seconds.
- queue: a persistent message on a topic exchange in the AMQP binding (binary: the attributes
  as `cloudEvents:` application properties; structured: application/cloudevents+json), the
  publish confirmed by the broker.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from django.conf import settings

from config.outbound import OutboundRefused, address_refusal, outbound_client, retry_after_seconds
from events.webhooks import signer

FORMAT = JSONFormat()


@dataclass(frozen=True)
class Sent:
    ok: bool
    duration_ms: float
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None  # seconds the receiver asked for (429, 503)
    gone: bool = False  # 410: the receiver wants no more
    permanent: bool = False  # retrying cannot help (the address is refused)


def webhook_headers(*, secret: str, msg_id: str, body: bytes, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of a delivery: id, timestamp and the v1 signature."""
    now = now or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer(secret).sign(msg_id=msg_id, timestamp=now, data=body.decode()),
    }


def http_send(sink, envelope) -> Sent:
    message = ce_http.to_binary(envelope, FORMAT) if sink.mode == "binary" else ce_http.to_structured(envelope, FORMAT)
    headers = {**message.headers, **webhook_headers(secret=sink.secret, msg_id=envelope.get_id(), body=message.body)}
    started = time.perf_counter()
    try:
        with outbound_client(timeout=settings.SINK_TIMEOUT, follow_redirects=False) as client:
            response = client.post(sink.url, content=message.body, headers=headers)
    except OutboundRefused as error:
        return Sent(ok=False, duration_ms=_since(started), error=str(error), permanent=True)
    except httpx.HTTPError as error:
        return Sent(ok=False, duration_ms=_since(started), error=f"{type(error).__name__}: {error}".strip(": "))
    duration, code = _since(started), response.status_code
    if 200 <= code < 300:
        return Sent(ok=True, duration_ms=duration, status_code=code)
    error = f"The receiver answered {code} {response.reason_phrase}"
    if 300 <= code < 400:
        error += f" (a redirect to {response.headers.get('location', '?')}, not followed: point the sink at it)"
    retry_after = retry_after_seconds(response.headers.get("retry-after")) if code in (429, 503) else None
    return Sent(ok=False, duration_ms=duration, status_code=code, error=error + ".", retry_after=retry_after,
                gone=code == 410)


def _amqp_host_check(url: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        infos = socket.getaddrinfo(host, parts.port or 5672, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConnectionError(f"{host} does not resolve: {error}") from error
    for info in infos:
        refusal = address_refusal(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
        if refusal:
            raise OutboundRefused(f"{host} may not be contacted: {refusal}.")


def amqp_message(envelope, mode: str) -> tuple[bytes, str, dict]:
    """(body, content type, application properties) of the event in the AMQP binding."""
    if mode != "binary":
        return FORMAT.write(envelope), FORMAT.get_content_type(), {}
    attributes = envelope.get_attributes()
    headers = {}
    for name, value in attributes.items():
        if name == "datacontenttype" or value is None:
            continue
        headers[f"cloudEvents:{name}"] = value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) \
            else value
    content_type = attributes.get("datacontenttype") or "application/json"
    return FORMAT.write_data(envelope.get_data(), content_type), content_type, headers


def queue_send(sink, envelope) -> Sent:
    from kombu import Connection, Exchange

    started = time.perf_counter()
    body, content_type, headers = amqp_message(envelope, sink.mode)
    try:
        _amqp_host_check(sink.url)
        exchange = Exchange(sink.exchange, type="topic", durable=True)
        with Connection(sink.url, connect_timeout=settings.SINK_TIMEOUT,
                        transport_options={"confirm_publish": True}) as connection:
            producer = connection.Producer()
            producer.publish(body, exchange=exchange, routing_key=sink.routing_key or envelope.get_type(),
                             headers=headers, content_type=content_type, content_encoding="utf-8",
                             delivery_mode=2, declare=[exchange], message_id=envelope.get_id(), retry=False)
    except OutboundRefused as error:
        return Sent(ok=False, duration_ms=_since(started), error=str(error), permanent=True)
    except Exception as error:  # the broker's and the socket's errors: worth another try
        return Sent(ok=False, duration_ms=_since(started), error=f"{type(error).__name__}: {error}")
    return Sent(ok=True, duration_ms=_since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def event_json(envelope) -> str:
    """The event in the JSON format, for display (the admin's deliveries)."""
    return json.dumps(json.loads(FORMAT.write(envelope)), indent=2)
