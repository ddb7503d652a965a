"""The audit log for auditors: filtered, paginated events, and the chain's verification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from broker.app import Assertion, Rt
from broker.auditquery import event_dict, make_filter
from broker.problems import problem_responses
from broker.routes.models import AuditPage, VerifyResult
from broker.service import Invalid

router = APIRouter(prefix="/v1")
Text = Annotated[str | None, Query(max_length=128)]


@router.get("/audit", response_model=AuditPage, responses=problem_responses(401, 403, 422, 503))
async def list_events(
    assertion: Assertion,
    rt: Rt,
    app: Text = None,
    staging: Text = None,
    client: Text = None,
    event: Text = None,
    since: Text = None,
    until: Text = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        caller = rt.authorize(assertion, "auditor")
        rt.broker.spend_assertion(caller)
        try:
            filters = make_filter(app=app, staging=staging, client=client, event=event,
                                  since=since, until=until)  # fmt: skip
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        rows = rt.broker.audit_page(after, limit + 1, filters)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "events": [event_dict(r) for r in rows],
            "next_after": rows[-1].seq if more and rows else None,
        }

    return await rt.run(work)


@router.get("/audit/verify", response_model=VerifyResult,
            responses=problem_responses(401, 403, 503))  # fmt: skip
async def verify(assertion: Assertion, rt: Rt) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        caller = rt.authorize(assertion, "auditor")
        rt.broker.spend_assertion(caller)
        return rt.verify_audit().report.as_dict()

    return await rt.run(work, slow=True)
