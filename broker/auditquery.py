"""Audit filters as callers give them (API, CLI, page) -> the store's AuditFilter. Pure."""

from __future__ import annotations

import datetime

from broker.store.model import AuditEvent, AuditFilter, AuditRow

__all__ = ["event_dict", "make_filter", "normalize_time"]


def normalize_time(text: str) -> str:
    """ISO 8601 (a date, or a date and time with an offset or Z) -> the stored form (UTC)."""
    raw = text.strip()
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC).isoformat(timespec="milliseconds")


def make_filter(
    *,
    app: str | None = None,
    staging: str | None = None,
    client: str | None = None,
    event: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> AuditFilter:
    return AuditFilter(
        app_guid=app or None,
        staging_guid=staging or None,
        client=client or None,
        event=event or None,
        since=normalize_time(since) if since else None,
        until=normalize_time(until) if until else None,
    )


def event_dict(row: AuditRow) -> dict[str, object]:
    e: AuditEvent = row.event
    return {
        "seq": row.seq, "at": row.at, "event": e.event, "client": e.client,
        "app_guid": e.app_guid, "staging_guid": e.staging_guid, "image": e.image,
        "registry": e.registry, "registry_username": e.registry_username,
        "token_fp": e.token_fp, "reason": e.reason, "detail": e.detail,
        "prev_hash": row.prev_hash, "hash": row.hash,
    }  # fmt: skip
