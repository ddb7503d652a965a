"""The audit log for auditors: filtered, paginated events, and the log's verification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from broker.api.deps import AsAuditor
from broker.api.errors import problem_responses
from broker.api.models import MAX_SEQ, AuditPage, VerifyResult
from broker.audit import make_filter
from broker.errors import Invalid
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
