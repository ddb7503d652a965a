"""The internal registry's token server (Distribution's token spec): ``/v1/registry-token``.

Registry clients authenticate the way they do to any token server:

- ``GET`` with HTTP Basic: the client id as user and a fresh client assertion as
  password (a tailor, a puller), or an app's pull credential (``app-<guid>`` and its
  secret; ``broker/service/pullcreds.py``). A Bearer assertion works too.
- ``POST`` (the OAuth2 form Distribution's spec describes): ``grant_type=password``
  with ``username`` and ``password`` as above, or ``grant_type=refresh_token`` with a
  pull credential's ``refresh_token``.

The answer is ``{"token", "access_token", "expires_in", "issued_at"}``; asked
``offline`` (``offline_token=true`` on GET, ``access_type=offline`` on POST), a pull
credential's answer carries ``refresh_token`` too: the secret again, which clients
keep as their identity token. An assertion is single-use and gets none.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response

from broker.api.deps import AsPuller, AsRegistryClient, AsRegistryClientByForm, Svc, offload
from broker.api.errors import problem_responses
from broker.api.models import PullerSession, RegistryToken, iso
from broker.errors import Invalid, Unauthenticated
from broker.service import Service
from broker.service.pullcreds import is_pull_secret
from broker.service.pullersessions import is_session

router = APIRouter(prefix="/v1")


def _scopes(values: list[str] | None) -> list[str]:
    return [part for s in values or [] for part in s.split(" ") if part]


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None  # the assertion path says "malformed"
    return user, password


def _reusable(secret: str) -> bool:
    """An app's pull credential or a puller's session: good for many token requests."""
    return is_pull_secret(secret) or is_session(secret)


async def _reused(
    service: Service,
    secret: str,
    user: str | None,
    audience: str,
    scopes: list[str],
    offline: bool,
) -> dict[str, Any]:
    """The token for a pull credential or a puller session; ``offline``: with the secret
    as the refresh token (clients that keep an identity token)."""

    def work() -> dict[str, Any]:
        if is_session(secret):
            client = service.puller_sessions.verify(secret, user)
            answer = service.registry.puller_token(client, audience, scopes)
        else:
            app_guid = service.pull_credentials.verify(secret, user)
            answer = service.registry.app_token(app_guid, audience, scopes)
        if offline:
            answer["refresh_token"] = secret
        return answer

    return await offload(service, work)


@router.get(
    "/registry-token", response_model=RegistryToken, responses=problem_responses(401, 403, 422, 503)
)
async def registry_token(
    request: Request,
    call: AsRegistryClient,
    svc: Svc,
    service: Annotated[str, Query(max_length=256)] = "",
    scope: Annotated[list[str] | None, Query()] = None,
    offline_token: Annotated[str, Query(max_length=8)] = "",
) -> dict[str, Any]:
    basic = _basic(request)
    if basic is not None and _reusable(basic[1]):
        offline = offline_token.lower() == "true"
        return await _reused(svc, basic[1], basic[0], service, _scopes(scope), offline)
    return await call.run(lambda caller: svc.registry.token(caller, service, _scopes(scope)))


_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
        "service": {"type": "string"},
        "scope": {"type": "string"},
        "client_id": {"type": "string"},
        "access_type": {"type": "string"},
        "username": {"type": "string"},
        "password": {"type": "string"},
        "refresh_token": {"type": "string"},
    },
}


@router.post(
    "/registry-token",
    response_model=RegistryToken,
    responses=problem_responses(401, 403, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _FORM}},
        }
    },
)
async def registry_token_oauth(
    request: Request, call: AsRegistryClientByForm, svc: Svc
) -> dict[str, Any]:
    """The OAuth2 form: ``grant_type``, ``service``, ``scope``, ``client_id``,
    ``access_type``, and ``username``/``password`` or ``refresh_token``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Invalid("the token request must be application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
    grant, audience = form.get("grant_type", ""), form.get("service", "")
    scopes = _scopes([form.get("scope", "")])
    offline = form.get("access_type", "") == "offline"
    if grant == "refresh_token":
        secret = form.get("refresh_token", "")
        if not _reusable(secret):
            raise Unauthenticated("refresh token is not a pull credential or session", "invalid")
        answer = await _reused(svc, secret, None, audience, scopes, offline=True)
    elif grant == "password":
        user, password = form.get("username", ""), form.get("password", "")
        if _reusable(password):
            answer = await _reused(svc, password, user, audience, scopes, offline)
        else:
            answer = await call.run(lambda caller: svc.registry.token(caller, audience, scopes))
    else:
        raise Invalid("grant_type must be password or refresh_token")
    return answer


@router.post(
    "/puller-sessions",
    status_code=201,
    response_model=PullerSession,
    responses=problem_responses(401, 403, 503),
)
async def puller_session(call: AsPuller, response: Response) -> PullerSession:
    """A puller's assertion traded for a session: what ``docker-credential-stager`` hands a
    registry client as the password of the puller's id (``broker/service/pullersessions.py``)."""
    got = await call.run(lambda caller: call.service.puller_sessions.open(caller))
    response.headers["Cache-Control"] = "no-store"
    return PullerSession(username=got.client, password=got.secret, expires_at=iso(got.expires_at))
