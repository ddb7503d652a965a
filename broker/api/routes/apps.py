"""Per-app pull credentials (cc): what the platform puts in a DesiredLRP's image
credentials. The work is in ``broker/service/pullcreds.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from broker.api.deps import AsCC
from broker.api.errors import problem_responses
from broker.api.models import GUID_PATTERN, PullCredential, PullCredentialInfo, iso

router = APIRouter(prefix="/v1")
AppPath = Annotated[str, Path(pattern=GUID_PATTERN, max_length=64)]


@router.post(
    "/apps/{app_guid}/pull-credentials",
    status_code=201,
    response_model=PullCredential,
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def issue(app_guid: AppPath, call: AsCC, response: Response) -> PullCredential:
    """A new pull credential for the app (a rotation when it has some: they keep working
    for the grace period). The secret is in this answer only."""
    got = await call.run(lambda caller: call.service.pull_credentials.issue(caller, app_guid))
    response.headers["Cache-Control"] = "no-store"
    return PullCredential(
        app_guid=got.app_guid,
        id=got.id,
        username=got.username,
        password=got.secret,
        created_at=iso(got.created_at),
        replaced_until=iso(got.replaced_until) if got.replaced_until is not None else None,
    )


@router.get(
    "/apps/{app_guid}/pull-credentials",
    response_model=list[PullCredentialInfo],
    responses=problem_responses(401, 403, 422, 503),
)
async def listing(app_guid: AppPath, call: AsCC) -> list[PullCredentialInfo]:
    """The app's credentials, live or not: never a secret."""
    service = call.service
    rows = await call.run(lambda caller: service.pull_credentials.of(app_guid), read=True)
    now = int(service.clock())
    return [
        PullCredentialInfo(
            id=r.id,
            created_at=iso(r.created_at),
            created_by=r.created_by,
            expires_at=iso(r.expires_at) if r.expires_at is not None else None,
            revoked_at=iso(r.revoked_at) if r.revoked_at is not None else None,
            live=r.revoked_at is None and (r.expires_at is None or r.expires_at > now),
        )
        for r in rows
    ]


@router.delete(
    "/apps/{app_guid}/pull-credentials",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 422, 503),
)
async def revoke(app_guid: AppPath, call: AsCC) -> Response:
    """Revoke every credential of the app (the app is deleted): 204 also when it had none."""
    await call.run(lambda caller: call.service.pull_credentials.revoke(caller, app_guid))
    return Response(status_code=204)
