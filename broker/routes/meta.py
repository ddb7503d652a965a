"""Public endpoints: liveness, metrics, and the JWKS of the broker's signing keys."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Response

from broker.app import Rt, Runtime

router = APIRouter()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks(rt: Runtime) -> dict[str, Any]:
    keys = rt.broker.keys
    audit = [
        {"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
         "x": _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))}
        for kid, public in sorted(keys.audit_public.items())
    ]  # fmt: skip
    numbers = keys.registry_key.public_key().public_numbers()
    spki = keys.registry_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert = keys.registry_cert.public_bytes(serialization.Encoding.DER)
    return {
        "keys": [
            *audit,
            {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big")),
             "y": _b64(numbers.y.to_bytes(32, "big")),
             "kid": "rs-" + hashlib.sha256(spki).hexdigest()[:16], "use": "sig", "alg": "ES256",
             "x5c": [base64.b64encode(cert).decode()]},
        ]
    }  # fmt: skip


@router.get("/.well-known/jwks.json")
async def get_jwks(rt: Rt) -> dict[str, Any]:
    return jwks(rt)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(rt: Rt) -> Response:
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
