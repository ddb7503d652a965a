"""Closing stagings: complete (the bound tailor) or cancel (cc). Both shred credentials."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from broker.app import Assertion, Rt
from broker.problems import problem_responses
from broker.routes.models import GUID_PATTERN, Completion, CompletionResult
from broker.service import Invalid, Missing
from tailor.egress import discover, security_group_rules
from tailor.errors import TailorError
from tailor.reference import parse_reference
from tailor.transport import InsecureHosts

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


@router.get(
    "/stagings/{staging_guid}/egress-rules",
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def egress_rules(
    staging_guid: GuidPath, assertion: Assertion, rt: Rt
) -> list[dict[str, Any]]:
    """The BBS SecurityGroupRules the staging task needs, discovered now."""

    def work() -> list[dict[str, Any]]:
        caller = rt.authorize(assertion, "cc")
        rt.broker.spend_assertion(caller)
        staging = rt.broker.staging(staging_guid)
        if staging is None:
            raise Missing(f"no staging {staging_guid}")
        s = rt.settings
        insecure = InsecureHosts([h for h in s.insecure_registries.split(",") if h.strip()])
        try:
            endpoints = discover(
                parse_reference(staging.image),
                broker_url=s.public_url,
                internal_registry=s.internal_registry,
                insecure=insecure,
            )
            return security_group_rules(endpoints)
        except TailorError as exc:
            raise Invalid(str(exc)) from None

    # Network probes: always off the event loop.
    return await run_in_threadpool(work)
