"""Repeatable actions: the ``Idempotency-Key`` a caller sends with a mint, a redemption or a
completion, so that a lost answer is recovered by asking again.

A caller picks a random key per action and sends it again in its own retries, each
retry with a fresh client assertion (an assertion is spent once, always). The first
request that acts remembers, in the same transaction as its action, what it did under
the key; a repeat by the same client with the same key and the same request, within
``BROKER_IDEMPOTENCY_SECONDS``, gets the same answer and is audited as a repeat
(``request.repeated``). A repeat without the key is what it always was: a replay,
refused. The same key with a different request is refused (422), never answered.

What the store keeps, and why it reveals nothing on its own (the database alone, like
a token alone, opens nothing):

- the key as ``HMAC(fingerprint key, client | key)``: not the key the caller holds;
- the request as an HMAC of its fields (a mint's include the password) under a key
  derived from the caller's key: equal requests compare equal, and without the caller's
  key not even a guess can be tested;
- for a mint only, the answer (the staging token, which carries the data key), sealed
  with AES-256-GCM under a key derived from the fingerprint key *and* the caller's
  Idempotency-Key: it opens only for a repeat that presents that key, on a broker that
  holds the key material. A redemption keeps no answer: its repeat opens the sealed
  credentials again with the data key in the token it presents, as the first did.

Rows expire with the window and the sweeper deletes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import Invalid
from broker.store import SqlTx

__all__ = ["Action", "Idempotency", "Key", "Remembered", "parse_key"]

Action = Literal["mint", "redeem", "complete"]
_MIN, _MAX = 16, 255
_NONCE = 12


def parse_key(value: str | None) -> str | None:
    """The header's value: an RFC 8941 string (``"..."``, as the IETF draft writes it) or
    the same characters bare. 16 to 255 visible ASCII characters: a random key, not a
    counter (the window is shared by all of one client's actions)."""
    if value is None:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not (_MIN <= len(text) <= _MAX) or any(
        not (0x21 <= ord(c) <= 0x7E) or c in '"\\' for c in text
    ):
        raise Invalid(
            f"Idempotency-Key must be {_MIN} to {_MAX} visible ASCII characters"
            " (a random value per action, the same in its retries)"
        )
    return text


@dataclass(frozen=True)
class Key:
    client: str
    id: str
    """What the store keeps: an HMAC of the client and the key, never the key."""
    sealing: bytes
    """Derived from the key the caller holds: seals a mint's answer."""

    def __repr__(self) -> str:
        return f"Key(client={self.client!r})"


@dataclass(frozen=True)
class Remembered:
    staging_guid: str
    answer: dict[str, Any] | None = field(repr=False)  # a mint's token


class Idempotency:
    def __init__(self, fingerprint_key: bytes, window_seconds: int) -> None:
        self._secret = fingerprint_key
        self.window = window_seconds

    def _mac(self, label: str, *parts: str) -> bytes:
        message = "\x00".join((label, *parts)).encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def key(self, client: str, raw: str) -> Key:
        return Key(
            client,
            self._mac("idempotency-key.v1", client, raw).hex(),
            self._mac("idempotency-answer.v1", client, raw),
        )

    @staticmethod
    def request(key: Key | None, action: Action, fields: dict[str, Any]) -> str:
        """The request's fingerprint: equal for equal requests, and nothing more. Keyed with
        the caller's key too, so that even the fingerprint key cannot test guesses of a
        mint's password against it."""
        if key is None:
            return ""
        body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        message = "\x00".join(("idempotency-request.v1", action, body)).encode()
        return hmac.new(key.sealing, message, hashlib.sha256).hexdigest()

    def find(
        self, tx: SqlTx, key: Key, action: Action, request: str, now: int
    ) -> Remembered | None:
        """What this key did within the window, if this is a repeat of it; None if the key
        is new (or its window is over). A key used for another request is refused."""
        row = tx.get_idempotency(key.client, key.id, now)
        if row is None:
            return None
        kept_action, staging_guid, kept_request, sealed = row
        if kept_action != action or not hmac.compare_digest(kept_request, request):
            raise Invalid("this Idempotency-Key was used for a different request")
        answer = None
        if sealed is not None:
            try:
                plain = AESGCM(key.sealing).decrypt(sealed[:_NONCE], sealed[_NONCE:], None)
                answer = json.loads(plain)
            except (InvalidTag, ValueError):
                # Keys rotated or row damaged: not a repeat this broker can answer.
                raise Invalid("this Idempotency-Key's answer cannot be given again") from None
        return Remembered(staging_guid, answer)

    def remember(
        self,
        tx: SqlTx,
        key: Key,
        action: Action,
        request: str,
        *,
        staging_guid: str,
        now: int,
        answer: dict[str, Any] | None = None,
    ) -> None:
        """Remember what this key did, in the action's transaction. A live row of the same
        key (a concurrent request with another body) refuses the action: it rolls back."""
        sealed = None
        if answer is not None:
            nonce = secrets.token_bytes(_NONCE)
            plain = json.dumps(answer).encode()
            sealed = nonce + AESGCM(key.sealing).encrypt(nonce, plain, None)
        if not tx.put_idempotency(
            key.client, key.id, action, staging_guid, request, sealed, now + self.window, now
        ):
            raise Invalid("this Idempotency-Key was used for a different request")
