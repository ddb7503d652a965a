"""The internal registry's token server (Distribution's token spec): ``GET /v1/registry-token``.

Registry clients authenticate the way they do to any token server: HTTP Basic with
the client id as user and a fresh client assertion as password, or a Bearer
assertion. The answer is ``{"token", "access_token", "expires_in", "issued_at"}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from broker.api.deps import AsRegistryClient
from broker.api.errors import problem_responses
from broker.api.models import RegistryToken

router = APIRouter(prefix="/v1")


@router.get(
    "/registry-token", response_model=RegistryToken, responses=problem_responses(401, 403, 422, 503)
)
async def registry_token(
    call: AsRegistryClient,
    service: Annotated[str, Query(max_length=256)] = "",
    scope: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    scopes = [part for s in scope or [] for part in s.split(" ") if part]
    return await call.run(lambda caller: call.service.registry.token(caller, service, scopes))
