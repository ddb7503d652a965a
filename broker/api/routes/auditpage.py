"""/audit: a read-only page for auditors. Server-rendered HTML, a little CSS, no scripts.

Auditors get in with a client assertion pasted into the login form, or with the
single-use link `broker audit login` prints; either gives a short session cookie
(HttpOnly, SameSite=Strict). Everyone else gets 401 and the login form.
"""

from __future__ import annotations

import base64
import datetime
import html
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.api.deps import AsAuditorByForm, Svc, offload
from broker.api.models import MAX_SEQ
from broker.audit import CATALOG, FILTERS, Record, Verification, events, make_filter
from broker.audit.checkpoints import SignedCheckpoint
from broker.audit.cosignatures import WitnessStatus
from broker.errors import Forbidden, Unauthenticated
from broker.service import Service

router = APIRouter(include_in_schema=False)
COOKIE = "stager_audit"
_HEADINGS = "Seq,At,Event,Client,App,Staging,Image,Registry user,Reason,Detail,Token fp".split(",")
PAGE_SIZE = 200

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;justify-content:space-between}
header a{color:#cfd6e4}
main{padding:16px 24px}
.status{padding:10px 14px;border-radius:6px;margin-bottom:14px;font-weight:600}
.ok{background:#e3f4e8;color:#135c2b;border:1px solid #9fd5ae}
.bad{background:#fbe5e5;color:#8a1c1c;border:1px solid #e6a3a3}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:14px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#555}
input,select{font:inherit;padding:4px 6px;border:1px solid #bbc;border-radius:4px}
button{font:inherit;padding:5px 12px;border:0;border-radius:4px;background:#2857c5;color:#fff}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e2e5ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-size:12px;text-transform:uppercase;color:#555}
td.mono{font-family:ui-monospace,monospace;font-size:12px}
td.time{white-space:nowrap}
.refused{color:#8a1c1c;font-weight:600}
ol.timeline{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px;margin:0 0 16px}
ol.timeline li{background:#fff;border:1px solid #cdd3dd;border-radius:16px;padding:4px 12px}
ol.timeline li.refused{border-color:#e6a3a3;background:#fbe5e5}
ol.timeline li.done{border-color:#9fd5ae;background:#e3f4e8}
#witnesses table{width:auto;margin-bottom:14px}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(
        doc,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _login_page(message: str = "", status: int = 401) -> HTMLResponse:
    note = f'<p class="status bad">{html.escape(message)}</p>' if message else ""
    body = f"""<header><strong>image-stager audit</strong></header><main>
<h1>Auditors only</h1>{note}
<p>Sign in with a client assertion of an <em>auditor</em> client (a JWT signed with its
key, audience this broker), or open the link <code>broker audit login --client NAME</code>
prints.</p>
<form method=post action="/audit/login"><label>Assertion<br>
<input name=assertion size=80 autocomplete=off></label> <button>Sign in</button></form>
</main>"""
    return _page("Sign in: image-stager audit", body, status=status)


def _start_session(service: Service, client: str) -> Response:
    seconds = service.settings.audit_session_minutes * 60
    response = RedirectResponse("/audit", status_code=303)
    response.set_cookie(
        COOKIE,
        service.auditors.start(client, seconds),
        max_age=seconds,
        httponly=True,
        samesite="strict",
        path="/audit",
        secure=service.settings.public_url.startswith("https://"),
    )
    return response


_TICKET_PROBLEMS = {
    "used": "That link was used already.",
    "not an auditor": "That client is not an auditor.",
}


@router.get("/audit/session")
async def session_from_ticket(request: Request, service: Svc) -> Response:
    ticket = request.query_params.get("ticket")
    try:
        client = await offload(service, lambda: service.auditors.redeem_ticket(ticket))
    except Unauthenticated as exc:
        return _login_page(_TICKET_PROBLEMS.get(exc.reason, "That link is invalid or has expired."))
    return _start_session(service, client)


def _cross_site(request: Request, public_url: str) -> bool:
    """A browser's POST from another site (login CSRF). Browsers send ``Origin`` (and
    ``Sec-Fetch-Site``) with a form POST; other clients send neither and may sign in."""
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(public_url)
        return origin.rstrip("/") != f"{parts.scheme}://{parts.netloc}"
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


@router.post("/audit/login")
async def login(request: Request, call: AsAuditorByForm) -> Response:
    if _cross_site(request, call.service.settings.public_url):
        return _login_page("Signing in from another site is refused.", status=403)
    try:
        client = await call.run(lambda caller: caller.name, read=True)
    except Unauthenticated:
        return _login_page("That assertion was not accepted.")
    except Forbidden:
        return _login_page("That client is not an auditor.")
    return _start_session(call.service, client)


@router.get("/audit/logout")
async def logout(request: Request, service: Svc) -> Response:
    cookie = request.cookies.get(COOKIE)
    await offload(service, lambda: service.auditors.end(cookie))
    response = RedirectResponse("/audit", status_code=303)
    response.delete_cookie(COOKIE, path="/audit")
    return response


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _link(**params: str) -> str:
    return "/audit?" + urlencode({k: v for k, v in params.items() if v})


def _row(e: Record) -> str:
    cls = ' class="refused"' if e.event == events.TOKEN_REFUSED.name else ""
    staging = (
        f'<a href="{html.escape(_link(staging=e.staging_guid))}">{_cell(e.staging_guid)}</a>'
        if e.staging_guid
        else ""
    )
    detail = ", ".join(f"{k}={v}" for k, v in sorted(e.detail.items())) if e.detail else ""
    at = _cell(e.at.replace("+00:00", "Z"))
    return (
        f"<tr><td>{e.seq}</td><td class='mono time'>{at}</td><td{cls}>{_cell(e.event)}</td>"
        f"<td>{_cell(e.client)}</td><td>{_cell(e.app_guid)}</td><td class=mono>{staging}</td>"
        f"<td>{_cell(e.image)}</td><td>{_cell(e.registry_username)}</td>"
        f"<td{cls}>{_cell(e.reason)}</td><td class=mono>{_cell(detail)}</td>"
        f'<td class=mono title="{_cell(e.token_fp)}">{_cell((e.token_fp or "")[12:24])}</td></tr>'
    )


def _timeline(rows: list[Record]) -> str:
    items = []
    for e in rows:
        kind = CATALOG.get(e.event)
        label = kind.label if kind else e.event
        if kind is events.TOKEN_REFUSED:
            text, cls = f"{label}: {e.reason} ({e.client})", "refused"
        else:
            text = f"{label} ({e.client})"
            cls = "done" if kind in (events.STAGING_COMPLETED, events.CREDENTIALS_PURGED) else ""
        items.append(f'<li class="{cls}" title="{_cell(e.at)}">{html.escape(text)}</li>')
    return '<ol class="timeline" id="timeline">' + "".join(items) + "</ol>"


def _checkpoint(latest: SignedCheckpoint | None) -> str:
    """The newest signed checkpoint, as anyone can fetch it from /v1/audit/checkpoint."""
    if latest is None:
        return "<p id=checkpoint>No signed checkpoint yet.</p>"
    root = base64.b64encode(latest.root).decode()
    return (
        f"<p id=checkpoint>Newest checkpoint: <strong>{latest.size}</strong> events, root"
        f" <code>{html.escape(root)}</code>, origin <code>{_cell(latest.checkpoint.origin)}</code>"
        ' (<a href="/v1/audit/checkpoint">signed note</a>,'
        ' <a href="/v1/audit/log-key">verifier key</a>)</p>'
    )


def _utc(ts: int) -> str:
    try:
        return f"{datetime.datetime.fromtimestamp(ts, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"
    except (OverflowError, OSError, ValueError):
        return str(ts)


def _witnesses(latest: SignedCheckpoint | None, witnesses: list[WitnessStatus]) -> str:
    """The registered witnesses: which cosigned the newest checkpoint, and when each last
    cosigned one."""
    if not witnesses:
        return (
            "<p id=witnesses>No witnesses registered: the checkpoints carry the log's"
            " signature alone (<code>broker audit witnesses add</code>).</p>"
        )
    size = latest.size if latest is not None else 0
    on_newest = [w for w in witnesses if w.last_size == size]
    rows = []
    for w in witnesses:
        if w.last_size is None or w.last_cosigned_at is None:
            last, when = "never", ""
        else:
            last = f"checkpoint {w.last_size}" + (" (the newest)" if w.last_size == size else "")
            when = _utc(w.last_cosigned_at)
        label = w.vkey.rsplit("+", 1)[0]
        rows.append(
            f'<tr><td>{_cell(w.name)}</td><td class=mono title="{_cell(w.vkey)}">'
            f"{_cell(label)}</td><td>{_cell(last)}</td><td class='mono time'>{_cell(when)}"
            "</td></tr>"
        )
    return (
        f"<div id=witnesses><p>Witnesses: the newest checkpoint is cosigned by"
        f" <strong>{len(on_newest)}</strong> of {len(witnesses)} registered"
        f"{': ' + _cell(', '.join(w.name for w in on_newest)) if on_newest else ''}.</p>"
        "<table><thead><tr><th>Witness</th><th>Key</th><th>Last cosigned</th>"
        "<th>When (its clock)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


@router.get("/audit")
async def audit_page(request: Request, service: Svc) -> Response:
    cookie = request.cookies.get(COOKIE)
    client = await offload(service, lambda: service.auditors.client(cookie))
    if client is None:
        return _login_page()
    params = {k: request.query_params.get(k, "").strip()[:128] for k in FILTERS}
    try:
        after = min(max(0, int(request.query_params.get("after", "0") or 0)), MAX_SEQ)
    except ValueError:
        after = 0

    Work = tuple[
        Verification, SignedCheckpoint | None, list[WitnessStatus], list[Record], list[Record], str
    ]

    def work() -> Work:
        # Always the whole log, now: a cached result would not cover the newest events.
        done = service.audit.check()
        latest = service.audit.latest()
        witnesses = service.cosignatures.witnesses()
        try:
            filters = make_filter(**params)
        except ValueError as exc:
            return done, latest, witnesses, [], [], str(exc)
        rows = service.audit.page(after, PAGE_SIZE + 1, filters)
        timeline = []
        if params["staging"]:
            timeline = service.audit.page(0, 500, make_filter(staging=params["staging"]))
        return done, latest, witnesses, rows, timeline, ""

    done, latest, witnesses, rows, timeline, error = await offload(service, work, slow=True)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    report = done.report
    status_cls = "ok" if report.intact else "bad"
    status_text = ("Log intact: " if report.intact else "LOG BROKEN: ") + report.summary()
    when = datetime.datetime.fromtimestamp(done.finished_at, datetime.UTC)
    status_when = f"verified in full at {when:%Y-%m-%d %H:%M:%S} UTC in {done.seconds:.1f} s"
    options = "".join(
        f"<option{' selected' if params['event'] == t else ''}>{t}</option>" for t in CATALOG
    )

    def field(name: str, label: str) -> str:
        return f'<label>{label}<input name={name} value="{_cell(params[name])}"></label>'

    form = (
        '<form class=filters method=get action="/audit" id=filters>'
        + field("app", "App")
        + field("staging", "Staging")
        + field("client", "Client")
        + f'<label>Event<select name=event><option value="">any</option>{options}</select></label>'
        + field("since", "Since (ISO 8601)")
        + field("until", "Until")
        + '<button type=submit>Filter</button> <a href="/audit">clear</a></form>'
    )
    parts = [
        f"<header><strong>image-stager audit</strong><span>{_cell(client)} · "
        '<a href="/audit/logout">sign out</a></span></header><main>',
        f'<div class="status {status_cls}" id=status>{html.escape(status_text)}'
        f"<br><small id=verified>{status_when}</small></div>",
        _checkpoint(latest),
        _witnesses(latest, witnesses),
        form,
    ]
    if error:
        parts.append(f'<p class="status bad">{html.escape(error)}</p>')
    if params["staging"]:
        parts.append(f"<h2>Staging {_cell(params['staging'])}</h2>" + _timeline(timeline))
    head = "".join(f"<th>{h}</th>" for h in _HEADINGS)
    parts.append(
        f"<table id=events><thead><tr>{head}</tr></thead><tbody>"
        + "".join(_row(r) for r in rows)
        + "</tbody></table>"
    )
    if not rows:
        parts.append("<p>No events match.</p>")
    if more:
        parts.append(
            f'<p><a href="{html.escape(_link(**params, after=str(rows[-1].seq)))}">'
            "next page</a></p>"
        )
    parts.append("</main>")
    return _page("image-stager audit", "".join(parts))
