"""Public endpoints: liveness, metrics, and the JWKS of the broker's signing keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from broker.api.deps import Meters, Svc
from broker.errors import NotFound

router = APIRouter()


@router.get("/.well-known/jwks.json")
async def get_jwks(service: Svc) -> dict[str, Any]:
    return service.jwks()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(meters: Meters, service: Svc) -> Response:
    if service.settings.metrics_addr:
        raise NotFound("metrics are served on their own address")
    return Response(meters.render(), media_type="text/plain; version=0.0.4")
