"""Standard Webhooks keys (https://www.standardwebhooks.com/): one kind of secret for push
sources (bearer secret and signing key) and sinks (signing key). Signing and verifying are the
`standardwebhooks` package's."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
MIN_KEY_BYTES = 24


def secret_new() -> str:
    """A Standard Webhooks key: `whsec_` and 32 random bytes in base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: Any) -> str | None:
    """Why `secret` cannot be a key, or None. A whsec_ key holds at least 24 bytes of base64; any
    other string of at least 32 printable characters is taken as the raw key."""
    if not isinstance(secret, str):
        return "must be a string."
    if secret.startswith(PREFIX):
        try:
            key = base64.b64decode(secret[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            return "a whsec_ key must be base64 after the prefix."
        if len(key) < MIN_KEY_BYTES:
            return f"a whsec_ key must hold at least {MIN_KEY_BYTES} bytes."
        return None
    if len(secret) < 32 or not secret.isprintable() or " " in secret:
        return "must be a whsec_ key or at least 32 printable characters without spaces."
    return None


def signer(secret: str) -> Webhook:
    """The package's signer and verifier for `secret` (a whsec_ key, or a raw key)."""
    return Webhook(secret) if secret.startswith(PREFIX) else Webhook(secret.encode())
