"""RFC 7523 client assertions: who is calling. Checks in one place, each with its reason.

The algorithm comes from an allow-list *and* must fit the client's key type
(EdDSA for Ed25519, ES256 for P-256), so ``alg: none`` and HMAC-with-a-public-key
(algorithm confusion) can never verify. Replay protection (``jti`` seen before)
is the caller's job, in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.store.model import ClientRow

__all__ = [
    "MAX_ASSERTION_LENGTH",
    "AuthFailed",
    "Verified",
    "load_client_key",
    "verify_assertion",
]

MAX_ASSERTION_LENGTH = 8192
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class AuthFailed(Exception):
    """401. ``reason`` is for logs and metrics, not for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__("client authentication failed")
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    client: ClientRow
    jti: str
    expires_at: int


def load_client_key(pem: str | bytes) -> PublicKey:
    """An Ed25519 or P-256 public key from PEM; anything else is refused."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("client keys must be Ed25519 or EC P-256")


def _alg_for(key: PublicKey) -> str:
    return "EdDSA" if isinstance(key, ed25519.Ed25519PublicKey) else "ES256"


def verify_assertion(
    token: str,
    *,
    lookup: Callable[[str], ClientRow | None],
    audience: str,
    now: int,
    max_lifetime: int,
    skew: int,
) -> Verified:
    """Verify ``token``; ``lookup(name) -> ClientRow | None`` finds the claimed client."""
    if len(token) > MAX_ASSERTION_LENGTH:
        raise AuthFailed("oversized assertion")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthFailed("malformed assertion") from None
    alg = header.get("alg")
    if alg not in ("EdDSA", "ES256"):
        raise AuthFailed(f"algorithm not allowed: {str(alg)[:16]}")
    name = unverified.get("iss")
    if not isinstance(name, str) or not name:
        raise AuthFailed("no issuer")
    client = lookup(name)
    if client is None:
        raise AuthFailed("unknown client")
    try:
        key = load_client_key(client.public_key)
    except ValueError:
        raise AuthFailed("client key unusable") from None
    if alg != _alg_for(key):
        raise AuthFailed("algorithm does not match the client's key")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=name,
            leeway=skew,
            options={"require": ["exp", "iss", "sub", "aud", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthFailed("expired assertion") from None
    except jwt.InvalidAudienceError:
        raise AuthFailed("wrong audience") from None
    except jwt.PyJWTError:
        raise AuthFailed("invalid assertion") from None
    if claims.get("sub") != name:
        raise AuthFailed("sub is not iss")
    exp = claims["exp"]
    if not isinstance(exp, int) or exp - now > max_lifetime + skew:
        raise AuthFailed("assertion lives too long")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        raise AuthFailed("bad jti")
    return Verified(client, jti, exp)
