"""Request and response bodies. Public models never carry a secret but the redemption."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "Completion",
    "CompletionResult",
    "Guid",
    "LookupRequest",
    "LookupResult",
    "MintRequest",
    "MintResult",
    "RedemptionResult",
    "TokenRequest",
]

GUID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Guid = Annotated[str, Field(pattern=GUID_PATTERN, min_length=1, max_length=64)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def iso(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MintRequest(_Strict):
    app_guid: Guid
    staging_guid: Guid
    image: Annotated[str, Field(min_length=1, max_length=512)]
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password: SecretStr | None = Field(default=None, min_length=1, max_length=4096)
    tailor: Name
    ttl_seconds: Annotated[int, Field(ge=1, le=86400)] | None = None
    space_guid: Guid | None = None
    user: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> MintRequest:
        # Neither: a public image staged into a secured internal registry (anonymous pull).
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (or neither, for a public image)")
        return self


class MintResult(BaseModel):
    staging_guid: str
    token: str
    expires_at: datetime.datetime


class TokenRequest(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=4096)]


LookupRequest = TokenRequest


class LookupResult(BaseModel):
    staging_guid: str
    app_guid: str
    image: str
    state: Literal["open", "redeemed", "completed", "failed", "cancelled", "expired"]
    expires_at: datetime.datetime
    redeemed: bool


class RedemptionResult(BaseModel):
    app_guid: str
    registry: str
    image: str
    username: str | None = Field(description="null: a public image, pull anonymously")
    password: str | None
    expires_at: datetime.datetime


class Completion(_Strict):
    status: Literal["succeeded", "failed"]
    result: dict[str, Any] | None = None
    error: Annotated[str, Field(max_length=2000)] | None = None


class CompletionResult(BaseModel):
    staging_guid: str
    state: Literal["completed", "failed"]


class AuditEventOut(BaseModel):
    seq: int
    at: str
    event: str
    client: str | None
    app_guid: str | None
    staging_guid: str | None
    image: str | None
    registry: str | None
    registry_username: str | None
    token_fp: str | None
    reason: str | None
    detail: dict[str, Any]
    prev_hash: str | None
    hash: str | None


class AuditPage(BaseModel):
    events: list[AuditEventOut]
    next_after: int | None
    """Pass as ``after`` for the next page; null on the last page."""


class VerifyResult(BaseModel):
    intact: bool
    events_total: int
    events_valid: int
    checkpoints_total: int
    checkpoints_valid: int
    problems: list[str]
    summary: str


class RegistryToken(BaseModel):
    token: str
    access_token: str
    expires_in: int
    issued_at: str
