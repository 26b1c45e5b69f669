"""Standard Webhooks signatures: how the server signs a delivery and how a receiver checks it.

Every webhook request carries three headers (https://www.standardwebhooks.com):

- `webhook-id`: the delivery's id, the same on every retry and redelivery (drop duplicates by it);
- `webhook-timestamp`: seconds since the epoch when this attempt was sent;
- `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`, one per
  active secret (two while a secret is being rotated).

A secret written `whsec_<base64>` is used as the decoded bytes (the convention's format); any
other secret is used as its UTF-8 bytes. Receivers in Python:

    from mcp_taskqueue.webhooks import verify_webhook, WebhookVerificationError

    event = verify_webhook(secret, request.body, request.headers)   # dict, or raises

Standard library only, so a receiver needs nothing else from this package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    """The request is not a valid, fresh delivery signed with the given secret."""


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a secret: base64-decoded after a `whsec_` prefix, else the UTF-8 text."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secrets: Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers of a signed delivery, signed with every active secret."""
    ts = int(time.time()) if timestamp is None else timestamp
    signatures = " ".join(sign(s, msg_id, ts, body) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signatures}


def verify_webhook(
    secret: str | Iterable[str],
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Check a delivery's signature and freshness; returns the decoded JSON body.

    `secret` may be several (a receiver rotating its own secret). `headers` is any mapping;
    names are matched case-insensitively. Raises `WebhookVerificationError` when a header is
    missing, the timestamp is more than `tolerance_seconds` away from now (replays), or no
    signature matches.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        raise WebhookVerificationError("missing or malformed webhook-id/-timestamp/-signature headers") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookVerificationError(f"timestamp {timestamp} is outside the {tolerance_seconds}s tolerance")
    raw = body.encode() if isinstance(body, str) else body
    secrets = [secret] if isinstance(secret, str) else list(secret)
    expected = {sign(s, msg_id, timestamp, raw) for s in secrets}
    if not any(hmac.compare_digest(sig, want) for sig in signatures for want in expected):
        raise WebhookVerificationError("no signature matches the secret")
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
