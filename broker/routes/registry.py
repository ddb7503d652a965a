"""The internal registry's token server (Distribution's token spec): ``GET /v1/registry-token``.

Registry clients authenticate the way they do to any token server: HTTP Basic with
the client id as user and a fresh client assertion as password, or a Bearer
assertion. The answer is ``{"token", "access_token", "expires_in", "issued_at"}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from broker.app import Rt
from broker.audit import timestamp
from broker.auth import AuthFailed
from broker.problems import problem_responses
from broker.registryauth import issue_token
from broker.routes.models import RegistryToken
from broker.service import Invalid

router = APIRouter(prefix="/v1")


def _assertion(request: Request) -> tuple[str, str | None]:
    """(assertion, the Basic user if Basic was used)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip(), None
    if scheme.lower() == "basic":
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise AuthFailed("malformed basic credentials") from None
        return password, user
    return "", None


@router.get(
    "/registry-token", response_model=RegistryToken, responses=problem_responses(401, 403, 422, 503)
)
async def registry_token(
    request: Request,
    rt: Rt,
    service: Annotated[str, Query(max_length=256)] = "",
    scope: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    assertion, basic_user = _assertion(request)
    scopes = [part for s in scope or [] for part in s.split(" ") if part]

    def work() -> dict[str, Any]:
        caller = rt.authorize(assertion, "tailor", "puller")
        if basic_user is not None and basic_user != caller.client.name:
            rt.broker.spend_assertion(caller)
            raise AuthFailed("basic user is not the assertion's issuer")
        settings = rt.settings
        if service != settings.registry_service:
            rt.broker.spend_assertion(caller)
            raise Invalid(f"this broker issues tokens for {settings.registry_service!r} only")
        access = rt.broker.registry_access(
            caller=caller, scopes=scopes, prefix=settings.registry_prefix, service=service
        )
        now = rt.broker.now()
        keys = rt.broker.keys
        token = issue_token(
            key=keys.registry_key,
            cert=keys.registry_cert,
            issuer=settings.registry_issuer,
            service=service,
            subject=caller.client.name,
            access=access,
            now=now,
            lifetime=settings.registry_token_seconds,
        )
        return {
            "token": token,
            "access_token": token,
            "expires_in": settings.registry_token_seconds,
            "issued_at": timestamp(now),
        }

    return await rt.run(work)
