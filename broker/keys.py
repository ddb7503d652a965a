"""The broker's key material in ``BROKER_KEYS_DIR``: created once, rotated, never overwritten.

| file | what |
|---|---|
| ``token-keys.json`` | AES-256 token key ring: ids, ages, which one is current |
| ``audit-signing.pem`` | Ed25519: signs audit checkpoints; public half in JWKS |
| ``registry-signing.pem``, ``.crt`` | ES256 key and self-signed certificate (registry tokens) |
| ``fingerprint.key`` | HMAC key for keyed fingerprints of tokens in the audit log |

Every file is written 0600 with O_EXCL (or replaced atomically by rotation).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from broker.errors import KeyFileError
from tailor.jose import b64url

__all__ = [
    "KeyMaterial",
    "TokenKey",
    "TokenKeyRing",
    "audit_verification_keys",
    "init_keys",
    "jwks",
    "list_token_keys",
    "load_keys",
    "retire_token_key",
    "rotate_audit_key",
    "rotate_token_keys",
]

RING = "token-keys.json"
AUDIT_KEY = "audit-signing.pem"
REGISTRY_KEY = "registry-signing.pem"
REGISTRY_CERT = "registry-signing.crt"
FINGERPRINT_KEY = "fingerprint.key"


@dataclass(frozen=True)
class TokenKey:
    kid: str
    key: bytes
    created: str


@dataclass(frozen=True)
class TokenKeyRing:
    """The newest key encrypts; every key in the ring decrypts."""

    keys: tuple[TokenKey, ...]

    @property
    def current(self) -> TokenKey:
        return self.keys[-1]

    def get(self, kid: str) -> TokenKey | None:
        return next((k for k in self.keys if k.kid == kid), None)


@dataclass(frozen=True)
class KeyMaterial:
    ring: TokenKeyRing
    audit_key: ed25519.Ed25519PrivateKey
    audit_kid: str
    registry_key: ec.EllipticCurvePrivateKey
    registry_cert: x509.Certificate
    fingerprint_key: bytes
    audit_public: dict[str, ed25519.Ed25519PublicKey]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` 0600; refuse if it exists (no silent overwrite)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite key material") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _new_token_key() -> dict[str, str]:
    return {
        "kid": "tk-" + secrets.token_hex(6),
        "key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "created": _now(),
    }


def _ring_entries(keys_dir: Path) -> list[dict[str, str]]:
    path = keys_dir / RING
    try:
        data = json.loads(path.read_text())
        entries = data["keys"]
        if not isinstance(entries, list) or not entries:
            raise ValueError
        return [dict(e) for e in entries]
    except FileNotFoundError:
        raise KeyFileError(f"{path} not found; run 'broker keys init'") from None
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(f"{path} is not a valid token key ring") from None


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "image-stager registry token signer")]
    )
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_keys(keys_dir: Path) -> list[str]:
    """Create every key file; refuses (before writing anything) if any exists."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = [RING, AUDIT_KEY, REGISTRY_KEY, REGISTRY_CERT, FINGERPRINT_KEY]
    present = [n for n in names if (keys_dir / n).exists()]
    if present:
        raise KeyFileError(
            f"{keys_dir} already holds {', '.join(present)}; refusing to overwrite key material"
        )
    registry_key = ec.generate_private_key(ec.SECP256R1())
    _write_new(keys_dir / RING, json.dumps({"keys": [_new_token_key()]}, indent=1).encode())
    _write_new(keys_dir / AUDIT_KEY, _pem(ed25519.Ed25519PrivateKey.generate()))
    _write_new(keys_dir / REGISTRY_KEY, _pem(registry_key))
    cert = _self_signed(registry_key).public_bytes(serialization.Encoding.PEM)
    _write_new(keys_dir / REGISTRY_CERT, cert)
    _write_new(keys_dir / FINGERPRINT_KEY, base64.b64encode(secrets.token_bytes(32)) + b"\n")
    return names


def rotate_token_keys(keys_dir: Path) -> str:
    entries = _ring_entries(keys_dir)
    entry = _new_token_key()
    _replace(keys_dir / RING, json.dumps({"keys": [*entries, entry]}, indent=1).encode())
    return entry["kid"]


def retire_token_key(keys_dir: Path, kid: str) -> None:
    entries = _ring_entries(keys_dir)
    if not any(e.get("kid") == kid for e in entries):
        raise KeyFileError(f"no token key {kid!r} in the ring")
    if entries[-1].get("kid") == kid:
        raise KeyFileError(f"{kid} is the current token key; rotate first")
    kept = [e for e in entries if e.get("kid") != kid]
    _replace(keys_dir / RING, json.dumps({"keys": kept}, indent=1).encode())


def list_token_keys(keys_dir: Path) -> list[tuple[str, str, bool]]:
    """(kid, created, current) for every key, oldest first."""
    entries = _ring_entries(keys_dir)
    return [(e["kid"], e.get("created", "?"), i == len(entries) - 1) for i, e in enumerate(entries)]


def load_ring(keys_dir: Path) -> TokenKeyRing:
    keys = []
    for e in _ring_entries(keys_dir):
        try:
            key = base64.b64decode(e["key"], validate=True)
        except (KeyError, ValueError):
            raise KeyFileError(f"{keys_dir / RING}: key {e.get('kid')!r} is unreadable") from None
        if len(key) != 32:
            raise KeyFileError(f"{keys_dir / RING}: key {e.get('kid')!r} is not 256 bits")
        keys.append(TokenKey(str(e["kid"]), key, str(e.get("created", ""))))
    return TokenKeyRing(tuple(keys))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path} not found; run 'broker keys init'") from None


def audit_kid(public: ed25519.Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "as-" + hashlib.sha256(raw).hexdigest()[:16]


AUDIT_RETIRED = "audit-retired"


def rotate_audit_key(keys_dir: Path) -> tuple[str, str]:
    """A new audit-signing key; the old public half stays for verification. (old, new) kids."""
    old = serialization.load_pem_private_key(_read(keys_dir / AUDIT_KEY), None)
    if not isinstance(old, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{keys_dir / AUDIT_KEY} is not an Ed25519 key")
    old_kid = audit_kid(old.public_key())
    retired = keys_dir / AUDIT_RETIRED
    retired.mkdir(mode=0o700, exist_ok=True)
    public = old.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    target = retired / f"{old_kid}.pub.pem"
    if not target.exists():
        _write_new(target, public)
    new = ed25519.Ed25519PrivateKey.generate()
    _replace(keys_dir / AUDIT_KEY, _pem(new))
    return old_kid, audit_kid(new.public_key())


def audit_verification_keys(keys_dir: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """Every audit key's public half by kid: the current one and the retired ones."""
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    current = serialization.load_pem_private_key(_read(keys_dir / AUDIT_KEY), None)
    if isinstance(current, ed25519.Ed25519PrivateKey):
        keys[audit_kid(current.public_key())] = current.public_key()
    for path in sorted((keys_dir / AUDIT_RETIRED).glob("*.pub.pem")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, ed25519.Ed25519PublicKey):
            keys[audit_kid(key)] = key
    return keys


def load_keys(keys_dir: Path) -> KeyMaterial:
    try:
        audit = serialization.load_pem_private_key(_read(keys_dir / AUDIT_KEY), None)
        registry = serialization.load_pem_private_key(_read(keys_dir / REGISTRY_KEY), None)
        cert = x509.load_pem_x509_certificate(_read(keys_dir / REGISTRY_CERT))
        fingerprint = base64.b64decode(_read(keys_dir / FINGERPRINT_KEY).strip(), validate=True)
    except (ValueError, TypeError):
        raise KeyFileError(f"key material in {keys_dir} is unreadable") from None
    if not isinstance(audit, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{keys_dir / AUDIT_KEY} is not an Ed25519 key")
    if not isinstance(registry, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{keys_dir / REGISTRY_KEY} is not an EC key")
    return KeyMaterial(
        ring=load_ring(keys_dir),
        audit_key=audit,
        audit_kid=audit_kid(audit.public_key()),
        registry_key=registry,
        registry_cert=cert,
        fingerprint_key=fingerprint,
        audit_public=audit_verification_keys(keys_dir),
    )


class RingWatcher:
    """The token ring, reloaded when ``broker keys rotate|retire`` changes the file."""

    def __init__(self, keys_dir: Path, ring: TokenKeyRing) -> None:
        self._path = keys_dir / RING
        self._keys_dir = keys_dir
        self._ring = ring
        self._mtime = self._stat()
        self._lock = threading.Lock()

    def _stat(self) -> int:
        try:
            return self._path.stat().st_mtime_ns
        except OSError:
            return 0

    def ring(self) -> TokenKeyRing:
        mtime = self._stat()
        if mtime != self._mtime:
            with self._lock:
                try:
                    self._ring = load_ring(self._keys_dir)
                    self._mtime = mtime
                except KeyFileError:
                    pass  # a half-written or broken ring must not take the broker down
        return self._ring


def jwks(keys: KeyMaterial) -> dict[str, Any]:
    """The public halves, as a JWKS: every audit key (current and retired) and the
    registry-token key with its certificate."""
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    audit = [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": kid,
            "use": "sig",
            "alg": "EdDSA",
            "x": b64url(public.public_bytes(*raw)),
        }
        for kid, public in sorted(keys.audit_public.items())
    ]
    public = keys.registry_key.public_key()
    numbers = public.public_numbers()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    registry = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "kid": "rs-" + hashlib.sha256(spki).hexdigest()[:16],
        "use": "sig",
        "alg": "ES256",
        "x5c": [
            base64.b64encode(keys.registry_cert.public_bytes(serialization.Encoding.DER)).decode()
        ],
    }
    return {"keys": [*audit, registry]}
