"""Staging tokens: mint (cc), look up (cc, tailor), redeem (tailor)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from broker.app import Runtime, require, runtime
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
from broker.store.model import ClientRow

router = APIRouter(prefix="/v1")
Rt = Annotated[Runtime, Depends(runtime)]
CC = Annotated[ClientRow, Depends(require("cc"))]
Tailor = Annotated[ClientRow, Depends(require("tailor"))]
CcOrTailor = Annotated[ClientRow, Depends(require("cc", "tailor"))]


@router.post(
    "/staging-tokens",
    status_code=201,
    response_model=MintResult,
    responses=problem_responses(401, 403, 409, 413, 422, 503),
)
def mint(body: MintRequest, client: CC, rt: Rt) -> MintResult:
    token, expires_at = rt.broker.mint(
        cc=client.name,
        app_guid=body.app_guid,
        staging_guid=body.staging_guid,
        image=body.image,
        username=body.username,
        password=body.password.get_secret_value(),
        tailor=body.tailor,
        ttl_seconds=body.ttl_seconds,
        space_guid=body.space_guid,
        user=body.user,
    )
    return MintResult(staging_guid=body.staging_guid, token=token, expires_at=iso(expires_at))


@router.post(
    "/staging-tokens/lookup",
    response_model=LookupResult,
    responses=problem_responses(400, 401, 403, 413, 422, 503),
)
def lookup(body: LookupRequest, client: CcOrTailor, rt: Rt) -> LookupResult:
    found = rt.broker.lookup(caller=client, token=body.token)
    return LookupResult(
        staging_guid=found.staging_guid,
        app_guid=found.app_guid,
        image=found.image,
        state=found.state,  # type: ignore[arg-type]
        expires_at=iso(found.expires_at),
        redeemed=found.redeemed,
    )


@router.post(
    "/redemptions",
    response_model=RedemptionResult,
    responses=problem_responses(400, 401, 403, 413, 422, 503),
)
def redeem(body: TokenRequest, client: Tailor, rt: Rt, response: Response) -> RedemptionResult:
    got = rt.broker.redeem(caller=client, token=body.token)
    # Credentials must not linger in any cache between here and the tailor.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return RedemptionResult(
        registry=got.registry,
        image=got.image,
        username=got.username,
        password=got.password,
        expires_at=iso(got.expires_at),
    )
