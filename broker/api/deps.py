"""What routes depend on, as named ``Annotated`` aliases: the service, and the caller.

A route that acts for a client declares it by role (``call: AsCC``) and does its
work in ``await call.run(lambda caller: ...)``: the assertion is verified, the
role checked and the ``jti`` spent exactly once (in the action's own unit of
work, or on its own) by ``Clients.act``. A route cannot act without that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from broker.errors import Unauthenticated
from broker.metrics import Metrics
from broker.service import Authenticated, Service
from broker.store.model import Role

__all__ = [
    "IDEMPOTENCY_KEY",
    "AsAuditor",
    "AsAuditorByForm",
    "AsCC",
    "AsCCOrAuditor",
    "AsCCOrTailor",
    "AsPuller",
    "AsRegistryClient",
    "AsRegistryClientByForm",
    "AsTailor",
    "Call",
    "Caller",
    "Meters",
    "Svc",
    "offload",
]

T = TypeVar("T")


async def offload(service: Service, work: Callable[[], T], *, slow: bool = False) -> T:
    """Run blocking work: inline for SQLite (local, sub-millisecond calls that cost less
    than a thread hop, and the GIL allows no parallelism anyway), in the threadpool for
    PostgreSQL (network round trips must not stall the loop). ``slow`` work (reading the
    whole audit log, network probes) always goes to the threadpool."""
    if slow:
        return await run_in_threadpool(work)
    if service.inline:
        return work()
    # The store's own threads, as many as its connections: a request's work waits for a
    # thread, never for a connection inside one (cheaper than anyio's 40-thread pool).
    return await asyncio.get_running_loop().run_in_executor(service.store_threads, work)


class Call:
    """One request made as a client of one of ``roles``."""

    def __init__(
        self,
        service: Service,
        assertion: str,
        roles: Sequence[Role],
        basic_user: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self.service = service
        self._assertion = assertion
        self._roles = roles
        self._basic_user = basic_user
        self.idempotency_key = idempotency_key
        """The request's ``Idempotency-Key`` header, if any (see ``IDEMPOTENCY_KEY``)."""

    async def run(
        self, action: Callable[[Authenticated], T], *, read: bool = False, slow: bool = False
    ) -> T:
        """Verify, check the role, act, spend the jti: in one trip off the loop (each extra
        trip costs more than the whole token work). ``read``: the action writes nothing."""

        def work() -> T:
            return self.service.clients.act(
                self._assertion, self._roles, action, read=read, basic_user=self._basic_user
            )

        return await offload(self.service, work, slow=slow)


async def get_service(request: Request) -> Service:
    # async: no I/O here, and a sync dependency would cost a threadpool hop per request.
    service: Service = request.app.state.service
    return service


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _credentials(request: Request, basic: bool) -> tuple[str, str | None]:
    """(assertion, the Basic user if Basic was used and allowed)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip(), None
    if basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed basic credentials", "malformed") from None
        user, _, password = decoded.partition(":")
        return password, user
    return "", None


class Caller:
    """The dependency ``Caller("cc", ...)``: the request's client assertion, for these roles.

    ``basic``: also accept HTTP Basic with the client id as user and an assertion as
    password (how registry clients speak to a token server). ``form``: the assertion is
    this field of a form body instead (the audit page's login form)."""

    def __init__(
        self,
        *roles: Role,
        basic: bool = False,
        form: str | None = None,
        form_user: str | None = None,
    ) -> None:
        self.roles = roles
        self.basic = basic
        self.form = form
        self.form_user = form_user

    async def __call__(self, request: Request) -> Call:
        if self.form is not None:
            fields = parse_qs((await request.body()).decode(errors="replace"))
            assertion = (fields.get(self.form) or [""])[0].strip()
            user = (fields.get(self.form_user) or [""])[0] if self.form_user else None
        else:
            assertion, user = _credentials(request, self.basic)
        key = request.headers.get("idempotency-key")
        return Call(await get_service(request), assertion, self.roles, user, key)


IDEMPOTENCY_KEY: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Random per action, the same in its retries (each with a fresh"
            " assertion): a repeat within the window gets the first answer again.",
        }
    ]
}
"""``openapi_extra`` of a repeatable action (broker/service/idempotency.py): its
``Idempotency-Key`` header, which ``Caller`` reads into ``Call.idempotency_key`` (a header
parameter of FastAPI's own cost 35 us a request to parse)."""
Svc = Annotated[Service, Depends(get_service)]
Meters = Annotated[Metrics, Depends(get_metrics)]
AsCC = Annotated[Call, Depends(Caller("cc"))]
AsTailor = Annotated[Call, Depends(Caller("tailor"))]
AsCCOrTailor = Annotated[Call, Depends(Caller("cc", "tailor"))]
AsAuditor = Annotated[Call, Depends(Caller("auditor"))]
AsCCOrAuditor = Annotated[Call, Depends(Caller("cc", "auditor"))]
AsPuller = Annotated[Call, Depends(Caller("puller"))]
AsRegistryClient = Annotated[Call, Depends(Caller("tailor", "puller", basic=True))]
AsRegistryClientByForm = Annotated[
    Call, Depends(Caller("tailor", "puller", form="password", form_user="username"))
]
"""The OAuth2 form of a token request: the client id as ``username``, the assertion as
``password``."""
AsAuditorByForm = Annotated[Call, Depends(Caller("auditor", form="assertion"))]
