"""Puller sessions: a cell-wide ``puller`` client's assertion traded for a secret that
standard registry clients can use more than once.

A client assertion is single-use and lives a minute; podman, skopeo and containerd
ask the realm for a token several times within one pull (one per repository and
action, again when a token expires mid-pull), all with the credentials they were given
once. ``docker-credential-stager`` (``tailor/credhelper.py``) therefore trades a fresh
assertion for a session (``POST /v1/puller-sessions``) and gives the client the
puller's id and the session as user name and password.

A session is ``stps1.<base64url(nonce || AES-256-GCM(client, key, expiry))>`` under a
key derived from the broker's fingerprint key: stateless (nothing stored, any replica
opens it), good for ``BROKER_PULLER_SESSION_SECONDS`` (900) and only for what the
puller role grants (pull). It names the client's registered public key too: removing
the client ends its sessions (within the client cache's 2 s), and adding it again with
a new key (what a key rotation is) does not bring them back. Each session issued is
audited (``puller.session``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.audit import events, timestamp
from broker.auth import Authenticated
from broker.errors import Unauthenticated
from broker.service.unit import Units
from broker.settings import Settings
from broker.store.model import ClientRow
from tailor.jose import b64url, b64url_decode

__all__ = ["PREFIX", "PullerSessions", "Session", "is_session"]

PREFIX = "stps1."
_NONCE = 12
_AAD = b"puller-session.v1"


def _key_id(client: ClientRow) -> str:
    """Which registered key a session was opened under (a re-added client has another)."""
    return hashlib.sha256(f"{client.public_key}|{client.created_at}".encode()).hexdigest()[:32]


def is_session(text: str) -> bool:
    return text.startswith(PREFIX)


@dataclass(frozen=True)
class Session:
    client: str
    secret: str
    expires_at: int

    def __repr__(self) -> str:
        return f"Session(client={self.client!r}, expires_at={self.expires_at})"


class Refused(Unauthenticated):
    def __init__(self, reason: str) -> None:
        super().__init__(f"puller session: {reason}", "pull_credential")


class PullerSessions:
    def __init__(
        self,
        fingerprint_key: bytes,
        units: Units,
        lookup: Callable[[str], ClientRow | None],
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self._key = hmac.new(fingerprint_key, _AAD, hashlib.sha256).digest()
        self._units = units
        self._lookup = lookup
        self._settings = settings
        self._clock = clock

    def open(self, caller: Authenticated) -> Session:
        """A session for the puller ``caller`` (its assertion spent with the audit event)."""
        if caller.role != "puller":
            raise Refused(f"{caller.name} is not a puller")
        expires_at = int(self._clock()) + self._settings.puller_session_seconds
        nonce = secrets.token_bytes(_NONCE)
        key = _key_id(caller.client)
        plain = json.dumps({"c": caller.name, "k": key, "e": expires_at}).encode()
        secret = PREFIX + b64url(nonce + AESGCM(self._key).encrypt(nonce, plain, _AAD))
        with self._units(caller) as unit:
            unit.audit(
                events.PULLER_SESSION(
                    client=caller.name, detail={"expires_at": timestamp(expires_at)}
                )
            )
        return Session(caller.name, secret, expires_at)

    def verify(self, secret: str, username: str | None = None) -> str:
        """The puller a live session belongs to (``username``, when given, must be it)."""
        try:
            blob = b64url_decode(secret[len(PREFIX) :])
            plain = AESGCM(self._key).decrypt(blob[:_NONCE], blob[_NONCE:], _AAD)
            body = json.loads(plain)
            client, key, expires_at = str(body["c"]), str(body["k"]), int(body["e"])
        except (ValueError, KeyError, TypeError, InvalidTag):
            raise Refused("does not open") from None
        if expires_at <= int(self._clock()):
            raise Refused(f"of {client} expired")
        row = self._lookup(client)
        if row is None or row.role != "puller" or not hmac.compare_digest(key, _key_id(row)):
            raise Refused(f"{client} is no longer a puller with the key it had")
        if username is not None and username != client:
            raise Refused(f"of {client} presented as {username[:64]!r}")
        return client
