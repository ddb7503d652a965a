"""Staging tokens: mint (cc), look up (cc, tailor), redeem (tailor)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from broker.app import Assertion, Rt
from broker.problems import problem_responses
from broker.routes.models import (
    LookupRequest,
    LookupResult,
    MintRequest,
    MintResult,
    RedemptionResult,
    TokenRequest,
    iso,
)

router = APIRouter(prefix="/v1")


@router.post(
    "/staging-tokens",
    status_code=201,
    response_model=MintResult,
    responses=problem_responses(401, 403, 409, 413, 422, 503),
)
async def mint(body: MintRequest, assertion: Assertion, rt: Rt) -> MintResult:
    def work() -> MintResult:
        caller = rt.authorize(assertion, "cc")
        token, expires_at = rt.broker.mint(
            caller=caller,
            app_guid=body.app_guid,
            staging_guid=body.staging_guid,
            image=body.image,
            username=body.username,
            password=body.password.get_secret_value() if body.password else None,
            tailor=body.tailor,
            ttl_seconds=body.ttl_seconds,
            space_guid=body.space_guid,
            user=body.user,
        )
        return MintResult(staging_guid=body.staging_guid, token=token, expires_at=iso(expires_at))

    return await rt.run(work)


@router.post(
    "/staging-tokens/lookup",
    response_model=LookupResult,
    responses=problem_responses(400, 401, 403, 413, 422, 503),
)
async def lookup(body: LookupRequest, assertion: Assertion, rt: Rt) -> LookupResult:
    def work() -> LookupResult:
        caller = rt.authorize(assertion, "cc", "tailor")
        found = rt.broker.lookup(caller=caller, token=body.token)
        return LookupResult(
            staging_guid=found.staging_guid,
            app_guid=found.app_guid,
            image=found.image,
            state=found.state,  # type: ignore[arg-type]
            expires_at=iso(found.expires_at),
            redeemed=found.redeemed,
        )

    return await rt.run(work)


@router.post(
    "/redemptions",
    response_model=RedemptionResult,
    responses=problem_responses(400, 401, 403, 413, 422, 503),
)
async def redeem(
    body: TokenRequest, assertion: Assertion, rt: Rt, response: Response
) -> RedemptionResult:
    def work() -> RedemptionResult:
        caller = rt.authorize(assertion, "tailor")
        got = rt.broker.redeem(caller=caller, token=body.token)
        return RedemptionResult(
            app_guid=got.app_guid,
            registry=got.registry,
            image=got.image,
            username=got.username,
            password=got.password,
            expires_at=iso(got.expires_at),
        )

    result = await rt.run(work)
    # Credentials must not linger in any cache between here and the tailor.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return result
