"""Client key pairs and RFC 7523 assertions, as the platform's components would make them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.store.model import Role

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Client:
    name: str
    role: Role
    key: PrivateKey

    @property
    def alg(self) -> str:
        return "EdDSA" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "ES256"

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def private_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write_public(self, folder: Path) -> Path:
        path = folder / f"{self.name}.pub.pem"
        path.write_text(self.public_pem)
        return path

    def assertion(self, audience: str, *, lifetime: int = 60, **override: object) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.name,
            "sub": self.name,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(12),
        }
        claims.update(override)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm=self.alg)

    def headers(self, audience: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.assertion(audience)}"}


def new_client(name: str, role: Role, kind: str = "ed25519") -> Client:
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return Client(name, role, key)


@dataclass
class Clients:
    """One client of each role (two tailors), as the ``clients`` fixture registers them."""

    cc: Client
    tailor: Client
    tailor2: Client
    auditor: Client
    puller: Client

    def all(self) -> list[Client]:
        return [self.cc, self.tailor, self.tailor2, self.auditor, self.puller]


def new_clients() -> Clients:
    return Clients(
        cc=new_client("cloud-controller", "cc"),
        tailor=new_client("tailor-1", "tailor", "p256"),
        tailor2=new_client("tailor-2", "tailor"),
        auditor=new_client("auditor", "auditor"),
        puller=new_client("cell-7", "puller", "p256"),
    )
