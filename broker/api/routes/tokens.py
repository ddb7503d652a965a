"""Staging tokens: mint (cc), look up (cc, tailor), redeem (tailor)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from broker.api.deps import IDEMPOTENCY_KEY, AsCC, AsCCOrTailor, AsTailor
from broker.api.errors import problem_responses
from broker.api.models import (
    LookupResult,
    MintRequest,
    MintResult,
    RedemptionResult,
    TokenRequest,
    iso,
    upstream_result,
)

router = APIRouter(prefix="/v1")


@router.post(
    "/staging-tokens",
    status_code=201,
    response_model=MintResult,
    responses=problem_responses(401, 403, 409, 413, 422, 503),
    openapi_extra=IDEMPOTENCY_KEY,
)
async def mint(body: MintRequest, call: AsCC) -> MintResult:
    minted = await call.run(
        lambda caller: call.service.stagings.mint(
            caller,
            app_guid=body.app_guid,
            staging_guid=body.staging_guid,
            image=body.image,
            username=body.username,
            password=body.password.get_secret_value() if body.password else None,
            tailor=body.tailor,
            ttl_seconds=body.ttl_seconds,
            space_guid=body.space_guid,
            user=body.user,
            idempotency_key=call.idempotency_key,
        ),
        slow=call.service.settings.upstream_exchange,  # the credentials' check is network I/O
    )
    return MintResult(
        staging_guid=minted.staging_guid, token=minted.token, expires_at=iso(minted.expires_at)
    )


@router.post(
    "/staging-tokens/lookup",
    response_model=LookupResult,
    responses=problem_responses(400, 401, 403, 413, 422, 503),
)
async def lookup(body: TokenRequest, call: AsCCOrTailor) -> LookupResult:
    found = await call.run(lambda caller: call.service.stagings.lookup(caller, body.token))
    return LookupResult(
        staging_guid=found.staging_guid,
        app_guid=found.app_guid,
        image=found.image,
        state=found.state,
        expires_at=iso(found.expires_at),
        redeemed=found.redeemed,
    )


@router.post(
    "/redemptions",
    response_model=RedemptionResult,
    responses=problem_responses(400, 401, 403, 413, 422, 503),
    openapi_extra=IDEMPOTENCY_KEY,
)
async def redeem(body: TokenRequest, call: AsTailor, response: Response) -> RedemptionResult:
    got = await call.run(
        lambda caller: call.service.stagings.redeem(
            caller, body.token, idempotency_key=call.idempotency_key
        ),
        slow=call.service.settings.upstream_exchange,  # the exchange is network I/O
    )
    # Credentials must not linger in any cache between here and the tailor.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return RedemptionResult(
        staging_guid=got.staging_guid,
        app_guid=got.app_guid,
        registry=got.registry,
        image=got.image,
        username=got.username,
        password=got.password,
        expires_at=iso(got.expires_at),
        upstream_token=upstream_result(got.upstream),
        staging_policy=call.service.staging_policy,
    )
