"""Public endpoints: liveness, readiness, metrics, and the JWKS of the broker's signing keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from broker.api.deps import Meters, Svc, offload
from broker.api.errors import problem, problem_responses
from broker.errors import NotFound

router = APIRouter()


@router.get("/.well-known/jwks.json")
async def get_jwks(service: Svc) -> dict[str, Any]:
    return service.jwks()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves. 200 whatever its store does."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=problem_responses(503))
async def readyz(service: Svc) -> dict[str, str] | Response:
    """Readiness, for a load balancer's health check: 503 while the store cannot write
    (its disk is full, it is unreachable or read-only), so the balancer sends requests to
    replicas that can act. At most one probe a second (``Service.unready``)."""
    why = await offload(service, service.unready, slow=True)
    if why is not None:
        return problem("unavailable", f"not ready: {why}")
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(meters: Meters, service: Svc) -> Response:
    if service.settings.metrics_addr:
        raise NotFound("metrics are served on their own address")
    return Response(meters.render(), media_type="text/plain; version=0.0.4")
