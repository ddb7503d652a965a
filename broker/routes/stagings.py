"""Closing stagings: complete (the bound tailor) or cancel (cc). Both shred credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from broker.app import Assertion, Rt
from broker.problems import problem_responses
from broker.routes.models import GUID_PATTERN, Completion, CompletionResult

router = APIRouter(prefix="/v1")
GuidPath = Annotated[str, Path(pattern=GUID_PATTERN, max_length=64)]


@router.post(
    "/stagings/{staging_guid}/complete",
    response_model=CompletionResult,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
)
async def complete(
    staging_guid: GuidPath, body: Completion, assertion: Assertion, rt: Rt
) -> CompletionResult:
    def work() -> CompletionResult:
        caller = rt.authorize(assertion, "tailor")
        state = rt.broker.complete(
            caller=caller,
            staging_guid=staging_guid,
            succeeded=body.status == "succeeded",
            result=body.result,
            error=body.error,
        )
        return CompletionResult(staging_guid=staging_guid, state=state)  # type: ignore[arg-type]

    return await rt.run(work)


@router.delete(
    "/stagings/{staging_guid}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def cancel(staging_guid: GuidPath, assertion: Assertion, rt: Rt) -> Response:
    def work() -> None:
        caller = rt.authorize(assertion, "cc")
        rt.broker.cancel(caller=caller, staging_guid=staging_guid)

    await rt.run(work)
    return Response(status_code=204)
