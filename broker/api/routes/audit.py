"""The audit log: for auditors, filtered, paginated events and the log's verification; for
anyone, the transparency log's signed checkpoint, verifier keys and proofs (hashes only)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse

from broker.api.deps import AsAuditor, AsCCOrAuditor, Svc, offload
from broker.api.errors import problem, problem_responses
from broker.api.models import MAX_SEQ, AuditPage, CosignaturesKept, VerifyResult
from broker.audit import make_filter
from broker.audit.receipts import receipt
from broker.audit.witnesses import MAX_COSIGNED_BYTES
from broker.errors import Invalid, NotFound
from broker.service import Authenticated

router = APIRouter(prefix="/v1")
Text = Annotated[str | None, Query(max_length=128)]


@router.get("/audit", response_model=AuditPage, responses=problem_responses(401, 403, 422, 503))
async def list_events(
    call: AsAuditor,
    app: Text = None,
    staging: Text = None,
    client: Text = None,
    event: Text = None,
    since: Text = None,
    until: Text = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    def page(caller: Authenticated) -> dict[str, Any]:
        try:
            filters = make_filter(
                app=app, staging=staging, client=client, event=event, since=since, until=until
            )
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        rows = call.service.audit.page(after, limit + 1, filters)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "events": [r.as_dict() for r in rows],
            "next_after": rows[-1].seq if more and rows else None,
        }

    return await call.run(page, read=True)


@router.get(
    "/audit/verify", response_model=VerifyResult, responses=problem_responses(401, 403, 503)
)
async def verify(call: AsAuditor) -> dict[str, Any]:
    done = await call.run(lambda caller: call.service.audit.check(), read=True, slow=True)
    return done.report.as_dict()


# -- the transparency log, public: hashes and signed checkpoints, never events ------------

_TEXT = "text/plain; charset=utf-8"
_NO_CACHE = {"Cache-Control": "no-cache"}


def _lines(hashes: list[bytes]) -> PlainTextResponse:
    body = "".join(base64.b64encode(h).decode() + "\n" for h in hashes)
    return PlainTextResponse(body, media_type=_TEXT)


@router.get(
    "/audit/checkpoint",
    response_class=PlainTextResponse,
    responses={**problem_responses(404, 503), 200: {"content": {_TEXT: {}}}},
)
async def checkpoint(service: Svc) -> PlainTextResponse:
    """The newest signed checkpoint (C2SP tlog-checkpoint, a signed note) with the
    cosignatures of the registered witnesses that cosigned it (c2sp.org/tlog-cosignature)."""
    note = await offload(service, service.cosignatures.cosigned)
    if note is None:
        raise NotFound("the audit log has no checkpoint yet")
    return PlainTextResponse(note.decode(), media_type=_TEXT, headers=_NO_CACHE)


@router.get(
    "/audit/checkpoints/{size}",
    response_class=PlainTextResponse,
    responses={**problem_responses(404, 422), 200: {"content": {_TEXT: {}}}},
)
async def checkpoint_of_size(
    service: Svc, size: Annotated[int, Path(ge=1, le=MAX_SEQ)]
) -> PlainTextResponse:
    """The checkpoint of ``size`` with its witnesses' cosignatures, if the log keeps it
    (every cosigned one, the newest, and one an hour besides: docs/audit.md)."""
    note = await offload(service, lambda: service.cosignatures.cosigned(size))
    if note is None:
        raise NotFound(f"the log keeps no checkpoint of size {size}")
    return PlainTextResponse(note.decode(), media_type=_TEXT, headers=_NO_CACHE)


@router.post(
    "/audit/cosignatures",
    response_model=CosignaturesKept,
    responses=problem_responses(409, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {_TEXT: {"schema": {"type": "string", "maxLength": MAX_COSIGNED_BYTES}}},
        }
    },
)
async def cosignatures(request: Request, service: Svc) -> Any:
    """A witness's cosignature of a checkpoint: the checkpoint's note text, a blank line
    and the cosignature line(s) (the log's own lines may stay). Anyone may post: only a
    valid cosignature by a registered witness of a checkpoint the log signed and keeps is
    kept (422 otherwise; 409: the log has replaced that checkpoint, cosign the newest)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_COSIGNED_BYTES:
            return problem("too-large", f"at most {MAX_COSIGNED_BYTES} bytes")
    done = await offload(service, lambda: service.cosignatures.accept(body))
    return {
        "size": done.size,
        "cosignatures": [
            {"witness": c.witness.vkey(), "timestamp": c.timestamp, "kept": kept}
            for c, kept in done.accepted
        ],
    }


@router.get(
    "/audit/log-key",
    response_class=PlainTextResponse,
    responses={200: {"content": {_TEXT: {}}}},
)
async def log_key(service: Svc) -> PlainTextResponse:
    """The log's verifier keys (C2SP signed-note ``name+id+key``), the current one first."""
    identity = service.audit.identity
    assert identity is not None  # a serving broker signs
    return PlainTextResponse("".join(v + "\n" for v in identity.vkeys()), media_type=_TEXT)


Size = Annotated[int, Query(ge=1, le=MAX_SEQ)]
Guid = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/audit/proofs/inclusion",
    response_class=PlainTextResponse,
    responses={**problem_responses(422, 503), 200: {"content": {_TEXT: {}}}},
)
async def inclusion(
    service: Svc, index: Annotated[int, Query(ge=0, le=MAX_SEQ)], size: Size
) -> PlainTextResponse:
    """The inclusion proof of leaf ``index`` (an event's seq - 1) in the tree of ``size``:
    one base64 hash a line, RFC 6962 order."""
    return _lines(await offload(service, lambda: service.audit.inclusion(index, size)))


@router.get(
    "/audit/proofs/consistency",
    response_class=PlainTextResponse,
    responses={**problem_responses(422, 503), 200: {"content": {_TEXT: {}}}},
)
async def consistency(
    service: Svc, to: Size, old: Annotated[int, Query(alias="from", ge=1, le=MAX_SEQ)]
) -> PlainTextResponse:
    """The consistency proof from the tree of ``from`` leaves to the tree of ``to``."""
    return _lines(await offload(service, lambda: service.audit.consistency(old, to)))


@router.get(
    "/stagings/{staging_guid}/receipt",
    responses=problem_responses(401, 403, 404, 503),
)
async def staging_receipt(call: AsCCOrAuditor, staging_guid: Guid) -> dict[str, Any]:
    """A staging's receipt (broker/audit/receipts.py): its own events, each with a C2SP
    tlog-proof in the newest checkpoint, for the app team to verify offline."""

    def build(caller: Authenticated) -> dict[str, Any]:
        done = receipt(call.service.audit, call.service.cosignatures, staging_guid)
        return {
            "staging_guid": done.staging_guid,
            "checkpoint": done.checkpoint.note.decode(),
            "entries": [
                {
                    "index": e.index,
                    "entry": base64.b64encode(e.entry).decode(),
                    "tlog_proof": e.proof.format().decode(),
                }
                for e in done.entries
            ],
        }

    return await call.run(build, read=True, slow=True)
