"""Which events to read: filters as callers give them (API, CLI, page), checked. Pure."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from broker.audit.events import CATALOG

__all__ = ["FILTERS", "AuditFilter", "make_filter", "normalize_time"]

FILTERS = ("app", "staging", "client", "event", "since", "until")
"""What an auditor may filter on: :func:`make_filter`'s keywords, the API's query
parameters, the CLI's options and the page's fields."""


@dataclass(frozen=True)
class AuditFilter:
    """Which events to read; ``since``/``until`` are timestamps as stored (ISO 8601, UTC)."""

    app_guid: str | None = None
    staging_guid: str | None = None
    client: str | None = None
    event: str | None = None
    since: str | None = None
    until: str | None = None

    def equal(self) -> dict[str, str]:
        """The fields an event must equal (the store's column names)."""
        pairs = (
            ("app_guid", self.app_guid),
            ("staging_guid", self.staging_guid),
            ("client", self.client),
            ("event", self.event),
        )
        return {column: value for column, value in pairs if value}


def normalize_time(text: str) -> str:
    """ISO 8601 (a date, or a date and time with an offset or Z) -> the stored form (UTC)."""
    raw = text.strip()
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        # In UTC it may fall outside the years 1-9999 (0001-01-01T00:00+14:00).
        return when.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError):
        raise ValueError(f"not an ISO 8601 time (years 1-9999, UTC): {text[:40]!r}") from None


def make_filter(
    *,
    app: str | None = None,
    staging: str | None = None,
    client: str | None = None,
    event: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> AuditFilter:
    """A filter from what a caller typed; ValueError names what is wrong."""
    given = (app, staging, client, event, since, until)
    if any(value and "\x00" in value for value in given):
        raise ValueError("a filter must not contain NUL")
    if event and event not in CATALOG:
        raise ValueError(f"no event type {event[:40]!r}: one of {', '.join(CATALOG)}")
    return AuditFilter(
        app_guid=app or None,
        staging_guid=staging or None,
        client=client or None,
        event=event or None,
        since=normalize_time(since) if since else None,
        until=normalize_time(until) if until else None,
    )
