"""The few JOSE pieces broker and tailor share: base64url, raw ES256 signatures, compact JWS.

Not on the ``tailor copy`` import path, so it may import ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "SigningKey",
    "b64url",
    "b64url_decode",
    "compact_jws",
    "es256_sign",
    "es256_verify",
]

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
_P256_BYTES = 32

SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str, *, canonical: bool = True) -> bytes:
    """Decode base64url; ValueError on bad input, and with ``canonical`` on any spelling
    but the one :func:`b64url` gives (padding, non-zero trailing bits)."""
    body = text
    if not canonical and text.endswith("="):
        body = text.rstrip("=")
        if len(text) % 4 or len(text) - len(body) > 2:
            raise ValueError("not base64url: wrong padding")
    # The decoder skips characters outside the alphabet silently: check them first (a
    # canonical decoding catches them anyway, by encoding the result again below).
    if len(body) % 4 == 1 or not (canonical or _ALPHABET.fullmatch(body)):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if canonical and b64url(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def _p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"ES256 needs a P-256 key, not {key.curve.name}")


def es256_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """An ES256 signature of ``data`` as JWS wants it: raw r||s, 64 bytes (not DER)."""
    _p256(key)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


def es256_verify(public_key: ec.EllipticCurvePublicKey, data: bytes, raw_sig: bytes) -> None:
    """Check a raw r||s ES256 signature; InvalidSignature if bad, ValueError if not 64 bytes."""
    _p256(public_key)
    if len(raw_sig) != 2 * _P256_BYTES:
        raise ValueError(f"an ES256 signature is 64 bytes, not {len(raw_sig)}")
    r = int.from_bytes(raw_sig[:_P256_BYTES], "big")
    s = int.from_bytes(raw_sig[_P256_BYTES:], "big")
    public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))


def _json(value: dict[str, Any]) -> str:
    return b64url(
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


def compact_jws(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    """``header.claims.signature``: EdDSA for an Ed25519 key, ES256 for a P-256 key.

    The key decides ``alg``; a header naming another one is a ValueError."""
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    if header.get("alg", alg) != alg:
        raise ValueError(f"the header says {header['alg']!r} but the key signs {alg}")
    signing = f"{_json({**header, 'alg': alg})}.{_json(claims)}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing.encode())
    else:
        signature = es256_sign(key, signing.encode())
    return f"{signing}.{b64url(signature)}"
