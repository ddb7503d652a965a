"""Rows the store reads and writes. No secret is ever a field here but ``sealed``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ROLES", "STATES", "AuditEvent", "AuditFilter", "AuditRow", "ClientRow", "StagingRow"]

ROLES = ("cc", "tailor", "auditor", "puller")
STATES = ("open", "redeemed", "completed", "failed", "cancelled", "expired")
OPEN_STATES = ("open", "redeemed")


@dataclass(frozen=True)
class ClientRow:
    name: str
    role: str
    public_key: str
    created_at: int


@dataclass(frozen=True)
class StagingRow:
    staging_guid: str
    app_guid: str
    space_guid: str | None
    pushed_by: str | None
    image: str
    registry: str
    registry_username: str
    """"" for a public image staged anonymously (the column is NOT NULL since v1)."""
    tailor: str
    cc_client: str
    token_id: str
    token_fp: str
    state: str
    created_at: int
    expires_at: int
    redeemed_at: int | None
    closed_at: int | None
    result: str | None


@dataclass(frozen=True)
class AuditEvent:
    """One decision. ``token_fp`` is a keyed fingerprint, never the token."""

    event: str
    client: str | None = None
    app_guid: str | None = None
    staging_guid: str | None = None
    image: str | None = None
    registry: str | None = None
    registry_username: str | None = None
    token_fp: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: str
    event: AuditEvent
    prev_hash: str | None = None
    hash: str | None = None


@dataclass(frozen=True)
class AuditFilter:
    """Which events to read; ``since``/``until`` are timestamps as stored (ISO 8601, UTC)."""

    app_guid: str | None = None
    staging_guid: str | None = None
    client: str | None = None
    event: str | None = None
    since: str | None = None
    until: str | None = None
