"""Standard Webhooks signatures. No external calls or any I/O activities are done here.

The signed content is `<webhook-id>.<webhook-timestamp>.<body>`; the key is the base64 after the
secret's `whsec_` prefix; `webhook-signature` is `v1,<base64 of its HMAC-SHA256>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from tether.api.webhooks import SECRET_PREFIX


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the same id on every attempt, its own time and signature."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
