"""RFC 7523 client assertions the Tailor (or the push client) signs to call the broker.

A compact JWS, EdDSA for an Ed25519 key and ES256 (raw r||s) for a P-256 key,
with ``iss`` = ``sub`` = the client id, ``aud`` = the broker URL, a short life and
a fresh ``jti``. The private key is read from a PEM file; it never leaves memory.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tailor.errors import ConfigError
from tailor.jose import compact_jws

__all__ = ["ClientKey", "load_client_key"]

_LIFETIME = 60


class ClientKey:
    """A client's identity: its id and private key."""

    def __init__(
        self, client_id: str, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    ) -> None:
        self.client_id = client_id
        self._key = key
        self.alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"

    def __repr__(self) -> str:
        return f"ClientKey(client_id={self.client_id!r}, alg={self.alg!r})"

    def assertion(self, audience: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": issued,
            "exp": issued + _LIFETIME,
            "jti": secrets.token_urlsafe(18),
        }
        return compact_jws({"typ": "JWT"}, claims, self._key)


def load_client_key(client_id: str, path: str | Path) -> ClientKey:
    """Read an unencrypted PEM private key (Ed25519 or P-256) for ``client_id``."""
    if not client_id:
        raise ConfigError("no client id given for the broker")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read client key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ClientKey(client_id, key)
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return ClientKey(client_id, key)
    raise ConfigError(f"{path}: client keys must be Ed25519 or EC P-256")
