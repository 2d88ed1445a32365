"""Which push source a request to `POST /api/events/` comes from.

Either `Authorization: Bearer SECRET`, the secret naming its source, or a Standard Webhooks
signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`: HMAC-SHA256 over
`id.timestamp.body` with the source's secret; timestamps more than 5 minutes off are refused,
the `standardwebhooks` package checks). `?source=NAME` may name the source; it must then be a
push source. Anything else: 401, with one message whatever was wrong, so a probe learns nothing
about which sources exist.
"""

from __future__ import annotations

import hmac

from standardwebhooks.webhooks import WebhookVerificationError

from config.exceptions import ApplicationError
from events.webhooks import signer

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class PushUnauthenticated(ApplicationError):
    status = 401


class PushSourceWrongKind(ApplicationError):
    """The named source exists but takes no pushed events over HTTP."""

    status = 400


def push_source_authenticate(*, headers: dict[str, str], body: bytes, source_name: str = ""):
    """The push Source the request authenticates as; PushUnauthenticated (401) otherwise.
    `headers` keys in lower case."""
    from ingestion.models import Source

    if source_name:
        named = Source.objects.filter(name=source_name).first()
        if named is not None and named.kind != Source.Kind.PUSH:
            raise PushSourceWrongKind(
                f"Source {named.name!r} is a {named.kind} source; only push sources take events over HTTP"
                + (" (a queue source reads its broker queue: run manage.py events_consume)." if named.kind == "queue"
                   else ".")
            )
        candidates = [named] if named is not None else []
    else:
        candidates = list(Source.objects.filter(kind=Source.Kind.PUSH).order_by("pk"))
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        token = token.strip()
        for source in candidates:
            secret = (source.config or {}).get("secret", "")
            if secret and hmac.compare_digest(secret.encode(), token.encode()):
                return source
        raise PushUnauthenticated("The bearer secret names no push source.")
    if all(headers.get(name) for name in SIGNATURE_HEADERS):
        for source in candidates:
            secret = (source.config or {}).get("secret", "")
            if not secret:
                continue
            try:
                signer(secret).verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError, UnicodeDecodeError):
                continue
            return source
        raise PushUnauthenticated(
            "The Standard Webhooks signature matches no push source's secret, or its timestamp is more than 5 "
            "minutes off."
        )
    raise PushUnauthenticated(
        "Authenticate as a push source: send 'Authorization: Bearer <the source's secret>', or sign the request "
        "with Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature)."
    )
