"""Public endpoints: liveness, metrics, and the JWKS of the broker's signing keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from broker.api.deps import Meters, Svc

router = APIRouter()


@router.get("/.well-known/jwks.json")
async def get_jwks(service: Svc) -> dict[str, Any]:
    return service.jwks()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(meters: Meters) -> Response:
    return Response(meters.render(), media_type="text/plain; version=0.0.4")
