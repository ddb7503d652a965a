"""Rows the store reads and writes, and the roles and states they hold. No secret is ever a
field here (sealed credentials are bytes only the token opens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["OPEN_STATES", "ROLES", "ClientRow", "PullCredentialRow", "Role", "StagingRow", "State"]

Role = Literal["cc", "tailor", "auditor", "puller"]
ROLES: tuple[Role, ...] = get_args(Role)
State = Literal["open", "redeemed", "completed", "failed", "cancelled", "expired"]
OPEN_STATES: tuple[State, ...] = ("open", "redeemed")


@dataclass(frozen=True)
class ClientRow:
    name: str
    role: Role
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
    state: State
    created_at: int
    expires_at: int
    redeemed_at: int | None
    closed_at: int | None
    result: str | None
    repository_gone_at: int | None = None
    """When a ``broker prune --apply`` walk began that found this closed staging's repository
    empty for good (or emptied it); None until then. Retention forgets only such rows."""


@dataclass(frozen=True)
class PullCredentialRow:
    """One pull credential of an app (``broker/service/pullcreds.py``): its secret's
    SHA-256 only. Live while not revoked and not past ``expires_at`` (None: no end; a
    rotation sets the end of those it replaces)."""

    id: str
    app_guid: str
    secret_hash: str
    created_at: int
    created_by: str
    expires_at: int | None
    revoked_at: int | None
