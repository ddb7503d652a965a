"""Closing stagings: complete (the bound tailor) or cancel (cc); egress rules (cc)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from broker.api.deps import IDEMPOTENCY_KEY, AsCC, AsTailor
from broker.api.errors import problem_responses
from broker.api.models import (
    GUID_PATTERN,
    Completion,
    CompletionResult,
    TokenRequest,
    UpstreamTokenResult,
    upstream_result,
)

router = APIRouter(prefix="/v1")
GuidPath = Annotated[str, Path(pattern=GUID_PATTERN, max_length=64)]


@router.post(
    "/stagings/{staging_guid}/complete",
    response_model=CompletionResult,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
    openapi_extra=IDEMPOTENCY_KEY,
)
async def complete(staging_guid: GuidPath, body: Completion, call: AsTailor) -> CompletionResult:
    state = await call.run(
        lambda caller: call.service.stagings.complete(
            caller,
            staging_guid,
            succeeded=body.status == "succeeded",
            result=body.result,
            error=body.error,
            idempotency_key=call.idempotency_key,
        )
    )
    return CompletionResult(staging_guid=staging_guid, state=state)  # type: ignore[arg-type]


@router.post(
    "/stagings/{staging_guid}/upstream-token",
    response_model=UpstreamTokenResult,
    responses=problem_responses(400, 401, 403, 409, 413, 422, 503),
)
async def upstream_token(
    staging_guid: GuidPath, body: TokenRequest, call: AsTailor, response: Response
) -> UpstreamTokenResult:
    """A fresh upstream pull token for the bound Tailor's open staging (the staging token
    presented again): never a password."""
    got = await call.run(
        lambda caller: call.service.stagings.refresh_upstream(caller, staging_guid, body.token),
        slow=True,
    )
    response.headers["Cache-Control"] = "no-store"
    answer = upstream_result(got)
    assert answer is not None
    return answer


@router.delete(
    "/stagings/{staging_guid}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def cancel(staging_guid: GuidPath, call: AsCC) -> Response:
    await call.run(lambda caller: call.service.stagings.cancel(caller, staging_guid))
    return Response(status_code=204)


@router.get(
    "/stagings/{staging_guid}/egress-rules",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def egress_rules(staging_guid: GuidPath, call: AsCC) -> list[dict[str, Any]]:
    """The BBS SecurityGroupRules the staging task needs, discovered now (a probe of
    the user's registry through the outbound guard, on threads of its own)."""
    service = call.service
    image = await call.run(lambda caller: service.stagings.image_of(staging_guid), read=True)
    return await service.egress.rules_async(staging_guid, image)
