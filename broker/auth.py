"""RFC 7523 client assertions: who is calling. Every check in one place, each with a reason.

A compact JWS is verified here directly (pyjwt spent most of a request's CPU
re-validating base64): ``cryptography`` parses keys and checks ES256; Ed25519
signatures are checked by libsodium (PyNaCl), about twice as fast as OpenSSL's
on this hardware and at least as strict (it also refuses small-order keys and
non-canonical signatures). The rules, as in pyjwt's hardening:
- the algorithm is not chosen by the token: the client's registered key decides
  it (Ed25519 -> EdDSA, P-256 -> ES256) and the header must say exactly that, so
  ``alg: none`` and HMAC-with-a-public-key (algorithm confusion) never verify;
- the signature is checked before any claim is trusted;
- only canonical base64url is accepted, ES256 signatures are raw 64-byte r||s;
- ``exp``, ``aud``, ``iss``, ``sub`` and ``jti`` are required; lifetimes over the
  maximum are refused;
- clock skew is allowed the same either way: ``iat`` (when sent) must be within the
  skew of the broker's clock, ahead or behind, ``nbf`` no more than the skew ahead, and
  ``exp`` no more than the skew past. A refusal for clock skew says so to the caller
  (:class:`~broker.errors.ClockSkew`): it is raised only after the signature verified
  with the registered key of the client the assertion names, so only a holder of a
  genuine assertion of a registered client ever sees it, and an unknown client, a
  removed one or a bad signature still get the one answer that tells nothing.
Replay protection (``jti`` seen before) is the caller's job, in the store.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import BadSignatureError

from broker.errors import ClockSkew, Unauthenticated
from broker.store.model import ClientRow
from tailor.jose import b64url_decode, es256_verify

__all__ = [
    "MAX_ASSERTION_LENGTH",
    "Authenticated",
    "load_client_key",
    "verify_assertion",
]

MAX_ASSERTION_LENGTH = 8192
_MAX_TIME = 2**53
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass
class Authenticated:
    """A client whose assertion verified. Its ``jti`` must be spent exactly once, which
    the service's units of work see to (``spent`` says it was)."""

    client: ClientRow
    jti: str
    expires_at: int
    spent: bool = False

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def role(self) -> str:
        return self.client.role


def _b64d(segment: str) -> bytes:
    # Canonical only: no padding, no stray characters, no alternative spellings.
    try:
        return b64url_decode(segment)
    except ValueError:
        raise Unauthenticated("malformed assertion", "malformed") from None


def _not_json(constant: str) -> None:
    # Python's reader takes NaN and Infinity; JSON has no such numbers.
    raise ValueError(f"not JSON: {constant}")


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64d(segment), parse_constant=_not_json)
    except ValueError:
        raise Unauthenticated("malformed assertion", "malformed") from None
    if not isinstance(value, dict):
        raise Unauthenticated("malformed assertion", "malformed")
    return value


@functools.lru_cache(maxsize=1024)
def _parsed(data: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        if not crypto_core_ed25519_is_valid_point(key.public_bytes_raw()):
            # A small-order point "verifies" forged signatures in lax verifiers.
            raise ValueError("the Ed25519 key is a weak (small-order) point")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("client keys must be Ed25519 or EC P-256")


def load_client_key(pem: str | bytes) -> PublicKey:
    """An Ed25519 or P-256 public key from PEM; anything else is refused (parse cached)."""
    return _parsed(pem.encode() if isinstance(pem, str) else pem)


def _alg_for(key: PublicKey) -> str:
    return "EdDSA" if isinstance(key, ed25519.Ed25519PublicKey) else "ES256"


def _check_signature(key: PublicKey, signed: bytes, signature: bytes) -> None:
    # Both algorithms' signatures are exactly 64 bytes (Ed25519 R||S, ES256 raw r||s).
    if len(signature) != 64:
        raise Unauthenticated("invalid assertion")
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            crypto_sign_open(signature + signed, key.public_bytes_raw())
        else:
            es256_verify(key, signed, signature)
    except (InvalidSignature, BadSignatureError, ValueError):
        raise Unauthenticated("invalid assertion") from None


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"bad {name}", "invalid")
    # A time a clock can hold: finite (1e999 reads as infinity), and no larger than JSON
    # numbers are exact.
    if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > _MAX_TIME:
        raise Unauthenticated(f"bad {name}", "invalid")
    return int(value)


def verify_assertion(
    token: str,
    *,
    lookup: Callable[[str], ClientRow | None],
    audience: str,
    now: int,
    max_lifetime: int,
    skew: int,
) -> Authenticated:
    """Verify ``token``; ``lookup(name) -> ClientRow | None`` finds the claimed client."""
    if len(token) > MAX_ASSERTION_LENGTH:
        raise Unauthenticated("oversized assertion", "malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("malformed assertion", "malformed")
    header = _json_object(parts[0])
    alg = header.get("alg")
    if alg not in ("EdDSA", "ES256"):
        raise Unauthenticated(f"algorithm not allowed: {str(alg)[:16]}", "malformed")
    if "crit" in header:
        raise Unauthenticated("critical header extensions are not supported", "malformed")
    unverified = _json_object(parts[1])
    name = unverified.get("iss")
    if not isinstance(name, str) or not name:
        raise Unauthenticated("no issuer", "malformed")
    if not name.isprintable():
        # Never a client name, and NUL breaks stores.
        raise Unauthenticated("unprintable issuer", "malformed")
    client = lookup(name)
    if client is None:
        raise Unauthenticated("unknown client")
    try:
        key = load_client_key(client.public_key)
    except ValueError:
        raise Unauthenticated("client key unusable") from None
    if alg != _alg_for(key):
        raise Unauthenticated("algorithm does not match the client's key")
    _check_signature(key, f"{parts[0]}.{parts[1]}".encode(), _b64d(parts[2]))

    claims = unverified  # authentic from here on
    exp = _int_claim(claims, "exp")
    if exp is None:
        raise Unauthenticated("invalid assertion: no exp", "invalid")
    iat = _int_claim(claims, "iat")
    nbf = _int_claim(claims, "nbf")
    # Clock skew, the same either way. ``iat`` is the client's clock when it signed; the
    # request takes well under a second to arrive, so ``iat - now`` is how far the clocks
    # are apart (or how late the assertion was sent). Only ``iat`` tells that: ``exp``
    # alone cannot tell a slow clock from a long lifetime, and through ``exp`` a client
    # 60 s-assertion was accepted from a clock 89 s slow but only 30 s fast.
    if iat is not None and abs(iat - now) > skew:
        apart = f"{abs(iat - now)} s {'ahead of' if iat > now else 'behind'}"
        raise ClockSkew(f"the assertion was issued {apart} the broker's clock", skew)
    if nbf is not None and nbf > now + skew:
        raise ClockSkew(f"the assertion is not valid until {nbf - now} s from now", skew)
    if now >= exp + skew:
        raise Unauthenticated("expired assertion", "invalid")
    # The lifetime on the client's own clock when it says when it signed, else from now.
    if (exp - iat if iat is not None else exp - now - skew) > max_lifetime:
        raise Unauthenticated("assertion lives too long", "invalid")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise Unauthenticated("wrong audience", "invalid")
    if claims.get("sub") != name:
        raise Unauthenticated("sub is not iss", "invalid")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256 or not jti.isprintable():
        raise Unauthenticated("invalid assertion: bad jti", "invalid")
    return Authenticated(client, jti, exp)
