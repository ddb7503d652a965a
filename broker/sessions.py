"""Short-lived auditor sessions for the /audit page: HMAC-signed, no server state.

A *ticket* (printed by ``broker audit login``, single use) is exchanged for a
*session* cookie. Both carry the client, the kind and an expiry, signed with a
key derived from the broker's fingerprint key, so every replica accepts them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

from tailor.jose import b64url, b64url_decode

__all__ = ["Session", "check", "issue", "session_key"]


def session_key(fingerprint_key: bytes) -> bytes:
    return hmac.new(fingerprint_key, b"image-stager audit session v1", hashlib.sha256).digest()


def issue(key: bytes, client: str, kind: str, lifetime: int, now: float | None = None) -> str:
    body = {
        "c": client,
        "k": kind,
        "e": int((now or time.time()) + lifetime),
        "n": secrets.token_urlsafe(12),
    }
    payload = b64url(json.dumps(body, separators=(",", ":")).encode())
    mac = b64url(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


class Session:
    def __init__(self, client: str, nonce: str, expires: int) -> None:
        self.client, self.nonce, self.expires = client, nonce, expires


def check(key: bytes, value: str | None, kind: str, now: float | None = None) -> Session | None:
    """The session ``value`` stands for, or None if it is forged, expired or of another kind."""
    if not value or len(value) > 1024 or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    expected = b64url(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        body = json.loads(b64url_decode(payload))
        client, got_kind, expires, nonce = body["c"], body["k"], int(body["e"]), str(body["n"])
    except (ValueError, KeyError, TypeError):
        return None
    if got_kind != kind or expires <= (now or time.time()) or not isinstance(client, str):
        return None
    return Session(client, nonce, expires)
