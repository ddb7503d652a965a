"""RFC 9457 problem details: every error the API gives, and which broker error gives it.

Each class of ``broker/errors.py`` maps to one problem type here, and nowhere
else. A :class:`~broker.errors.Refusal` gets its type's fixed answer, never its
reason (no oracle); the reason goes to the log and the metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.errors import (
    AuditTampered,
    BrokerError,
    Busy,
    ClockSkew,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OutcomeUnknown,
    SetupError,
    StoreError,
    StoreFull,
    TokenRefused,
    Unauthenticated,
    Unavailable,
    UpstreamUnreachable,
)

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

# Most specific first: the first class an error is an instance of decides.
_KINDS: tuple[tuple[type[BrokerError], str], ...] = (
    (TokenRefused, "token-refused"),
    (Unauthenticated, "unauthenticated"),
    (Forbidden, "forbidden"),
    (NotFound, "not-found"),
    (Conflict, "conflict"),
    (Invalid, "invalid-request"),
    (Unavailable, "unavailable"),
    (SetupError, "unavailable"),  # the broker's own set-up, not the request: nothing was done
)
# Most specific first, as above.
_UNAVAILABLE: dict[type[BrokerError], str] = {
    AuditTampered: "the audit log is not intact; nothing was done",
    OutcomeUnknown: (
        "the broker lost the database's answer while committing: the outcome is unknown,"
        " this action may have been done; look the staging up (POST"
        " /v1/staging-tokens/lookup), then repeat the request with the same"
        " Idempotency-Key, or cancel the staging"
    ),
    StoreError: "the broker could not record this action; nothing was done",
}


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem(
    kind: str, detail: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    status, title = PROBLEM_TYPES[kind]
    body: dict[str, Any] = {"type": _BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="image-stager"'
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


def answer(request: Request, exc: BrokerError) -> JSONResponse:
    """The problem for a broker error (and its log line and metric, where it has them)."""
    kind = next((k for cls, k in _KINDS if isinstance(exc, cls)), "invalid-request")
    if isinstance(exc, Unauthenticated):
        log.info("client authentication failed", extra={"reason": exc.reason})
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.auth_failures.labels(reason=exc.kind).inc()
        # Clock skew is the one reason told: only a genuine assertion gets that far.
        return problem(kind, exc.detail if isinstance(exc, ClockSkew) else None)
    if isinstance(exc, TokenRefused):
        return problem(kind)  # the same answer for every reason: the audit log has it
    if isinstance(exc, UpstreamUnreachable):
        log.warning("upstream registry unreachable", extra={"error": str(exc)})
        return problem(kind, str(exc))
    if isinstance(exc, Busy):
        log.warning("busy; request refused", extra={"error": str(exc)})
        return problem(kind, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, Unavailable | SetupError):
        if isinstance(exc, AuditTampered):
            log.critical("audit log tampered; refusing to append", extra={"error": str(exc)})
        elif isinstance(exc, OutcomeUnknown):
            log.error(
                "store failure while committing; the action may have been done",
                extra={"error": str(exc)},
            )
        elif isinstance(exc, StoreFull):
            # Every write fails until space is freed; /readyz says so to the balancer.
            log.error(
                "store full: the disk (or database) is full; action not taken",
                extra={"error": str(exc)},
            )
        elif isinstance(exc, StoreError):
            log.error("store failure; action not taken", extra={"error": str(exc)})
        else:
            log.error("broker set-up failure; action not taken", extra={"error": str(exc)})
        detail = next((d for cls, d in _UNAVAILABLE.items() if isinstance(exc, cls)), None)
        return problem(kind, detail)
    # Forbidden says no more than its title; the others say what was wrong with the request.
    return problem(kind, None if isinstance(exc, Forbidden) else str(exc))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "the request body does not match the schema"
        return problem("invalid-request", detail, errors=_safe_errors(exc))

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

    @app.exception_handler(BrokerError)
    async def _broker(request: Request, exc: BrokerError) -> JSONResponse:
        return answer(request, exc)
