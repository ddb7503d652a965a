"""RFC 9457 problem details: every error the API gives, and how exceptions map to them."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.audit import AuditTampered
from broker.auth import AuthFailed
from broker.service import Conflict, Invalid, Missing, Refused
from broker.store import StoreError

__all__ = ["PROBLEM_TYPES", "Problem", "install_handlers", "problem", "problem_responses"]

log = logging.getLogger("broker.api")
MEDIA_TYPE = "application/problem+json"
_BASE = "urn:image-stager:problem:"

PROBLEM_TYPES = {
    "token-refused": (400, "staging token refused"),
    "unauthenticated": (401, "client authentication failed"),
    "forbidden": (403, "this client's role may not call this endpoint"),
    "not-found": (404, "not found"),
    "method-not-allowed": (405, "method not allowed"),
    "conflict": (409, "conflict"),
    "too-large": (413, "request body too large"),
    "unsupported-media-type": (415, "request body must be application/json"),
    "invalid-request": (422, "invalid request"),
    "unavailable": (503, "service unavailable"),
}


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem(kind: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    status, title = PROBLEM_TYPES[kind]
    body: dict[str, Any] = {"type": _BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="image-stager"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries, so clients (and schemathesis) know every answer's shape."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        title = next(t for s, t in PROBLEM_TYPES.values() if s == status)
        out[status] = {"model": Problem, "description": title, "content": {MEDIA_TYPE: {}}}
    return out


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic echoes the offending input; it may be a password. Location and message only.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))[:200]}
        for err in exc.errors()[:20]
    ]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem("invalid-request", "the request body does not match the schema",
                       errors=_safe_errors(exc))  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {
            401: "unauthenticated",
            403: "forbidden",
            404: "not-found",
            405: "method-not-allowed",
            413: "too-large",
            415: "unsupported-media-type",
        }
        kind = kinds.get(exc.status_code, "invalid-request")
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 401 else None
        return problem(kind, detail)

    @app.exception_handler(AuthFailed)
    async def _auth(request: Request, exc: AuthFailed) -> JSONResponse:
        log.info("client authentication failed", extra={"reason": exc.reason})
        metrics = getattr(getattr(request.app.state, "runtime", None), "metrics", None)
        if metrics is not None:
            metrics.auth_failures.labels(reason=exc.reason[:40]).inc()
        return problem("unauthenticated")

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        # The same answer for every reason: no oracle. The audit log has the reason.
        return problem("token-refused")

    @app.exception_handler(Invalid)
    async def _unacceptable(request: Request, exc: Invalid) -> JSONResponse:
        return problem("invalid-request", str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem("conflict", str(exc))

    @app.exception_handler(Missing)
    async def _missing(request: Request, exc: Missing) -> JSONResponse:
        return problem("not-found", str(exc))

    @app.exception_handler(AuditTampered)
    async def _tampered(request: Request, exc: AuditTampered) -> JSONResponse:
        log.critical("audit log tampered; refusing to append", extra={"error": str(exc)})
        return problem("unavailable", "the audit log is not intact; nothing was done")

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store failure; action not taken", extra={"error": str(exc)})
        return problem("unavailable", "the broker could not record this action; nothing was done")
