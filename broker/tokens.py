"""The staging token: AES-256-GCM of its claims under the current ring key. One file, one job.

Format: ``st1.<kid>.<base64url(nonce || ciphertext || tag)>``; the version and key
id are authenticated as associated data. The claims carry a fresh per-staging
data key that opens the sealed credentials, so the database alone (no data key)
or the token alone (no ciphertext) reveals nothing.

Every failure raises :class:`TokenRefused`; its ``reason`` is for the audit log
only and is never shown to a caller (no oracle).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import TokenRefused
from broker.keys import TokenKeyRing
from tailor.jose import b64url, b64url_decode

__all__ = [
    "MAX_TOKEN_LENGTH",
    "StagingClaims",
    "fingerprint",
    "open_credentials",
    "open_token",
    "seal_credentials",
    "seal_token",
]

VERSION = "st1"
MAX_TOKEN_LENGTH = 4096
_NONCE = 12


@dataclass(frozen=True)
class StagingClaims:
    token_id: str
    staging_guid: str
    app_guid: str
    image: str
    registry: str
    tailor: str
    issued_at: int
    expires_at: int
    data_key: bytes

    def __repr__(self) -> str:  # the data key never reaches a log through repr()
        return f"StagingClaims(token_id={self.token_id!r}, staging_guid={self.staging_guid!r})"


def seal_token(claims: StagingClaims, ring: TokenKeyRing) -> str:
    key = ring.current
    body = {
        "tid": claims.token_id,
        "sg": claims.staging_guid,
        "app": claims.app_guid,
        "img": claims.image,
        "reg": claims.registry,
        "tlr": claims.tailor,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "dk": b64url(claims.data_key),
    }
    nonce = secrets.token_bytes(_NONCE)
    aad = f"{VERSION}.{key.kid}".encode()
    sealed = AESGCM(key.key).encrypt(nonce, json.dumps(body, separators=(",", ":")).encode(), aad)
    return f"{VERSION}.{key.kid}.{b64url(nonce + sealed)}"


def open_token(token: object, ring: TokenKeyRing, now: int) -> StagingClaims:
    """Authenticate, decrypt and check expiry; anything wrong is TokenRefused."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenRefused("malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise TokenRefused("malformed")
    key = ring.get(parts[1])
    if key is None:
        raise TokenRefused("unknown or retired key")
    try:
        # Only the canonical encoding: one token, one string, one fingerprint.
        blob = b64url_decode(parts[2])
    except ValueError:
        raise TokenRefused("malformed") from None
    if len(blob) < _NONCE + 16:
        raise TokenRefused("malformed")
    aad = f"{VERSION}.{key.kid}".encode()
    try:
        plain = AESGCM(key.key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except InvalidTag:
        raise TokenRefused("tampered") from None
    try:
        body = json.loads(plain)
        claims = StagingClaims(
            token_id=str(body["tid"]),
            staging_guid=str(body["sg"]),
            app_guid=str(body["app"]),
            image=str(body["img"]),
            registry=str(body["reg"]),
            tailor=str(body["tlr"]),
            issued_at=int(body["iat"]),
            expires_at=int(body["exp"]),
            data_key=b64url_decode(str(body["dk"])),
        )
    except (ValueError, KeyError, TypeError):
        raise TokenRefused("malformed claims") from None
    if len(claims.data_key) != 32:
        raise TokenRefused("malformed claims")
    if now >= claims.expires_at:
        raise TokenRefused("expired")
    return claims


def _credentials_aad(staging_guid: str, image: str) -> bytes:
    # Binds the sealed row to its staging and image: rows cannot be swapped.
    return f"credentials.v1|{staging_guid}|{image}".encode()


def seal_credentials(
    data_key: bytes, *, staging_guid: str, image: str, username: str | None, password: str | None
) -> bytes:
    """Both None: an anonymous (public image) staging; still sealed, so a redemption
    proves the same things either way."""
    nonce = secrets.token_bytes(_NONCE)
    plain = json.dumps({"u": username, "p": password}).encode()
    return nonce + AESGCM(data_key).encrypt(nonce, plain, _credentials_aad(staging_guid, image))


def open_credentials(
    data_key: bytes, sealed: bytes, *, staging_guid: str, image: str
) -> tuple[str | None, str | None]:
    try:
        plain = AESGCM(data_key).decrypt(
            sealed[:_NONCE], sealed[_NONCE:], _credentials_aad(staging_guid, image)
        )
        body = json.loads(plain)
        username, password = body["u"], body["p"]
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise TokenRefused("sealed credentials do not open") from None
    if username is None and password is None:
        return None, None
    if not isinstance(username, str) or not isinstance(password, str):
        raise TokenRefused("sealed credentials do not open")
    return username, password


def fingerprint(key: bytes, token: str) -> str:
    """A keyed fingerprint: lets an auditor match a token without the log holding it."""
    return "hmac-sha256:" + hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
