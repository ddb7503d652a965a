"""Closing stagings: complete (the bound tailor) or cancel (cc). Both shred credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from broker.app import Runtime, require, runtime
from broker.problems import problem_responses
from broker.routes.models import GUID_PATTERN, Completion, CompletionResult
from broker.store.model import ClientRow

router = APIRouter(prefix="/v1")
Rt = Annotated[Runtime, Depends(runtime)]
GuidPath = Annotated[str, Path(pattern=GUID_PATTERN, max_length=64)]


@router.post(
    "/stagings/{staging_guid}/complete",
    response_model=CompletionResult,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
)
def complete(
    staging_guid: GuidPath,
    body: Completion,
    client: Annotated[ClientRow, Depends(require("tailor"))],
    rt: Rt,
) -> CompletionResult:
    state = rt.broker.complete(
        caller=client,
        staging_guid=staging_guid,
        succeeded=body.status == "succeeded",
        result=body.result,
        error=body.error,
    )
    return CompletionResult(staging_guid=staging_guid, state=state)  # type: ignore[arg-type]


@router.delete(
    "/stagings/{staging_guid}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
def cancel(
    staging_guid: GuidPath,
    client: Annotated[ClientRow, Depends(require("cc"))],
    rt: Rt,
) -> Response:
    rt.broker.cancel(caller=client, staging_guid=staging_guid)
    return Response(status_code=204)
