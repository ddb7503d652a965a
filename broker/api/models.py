"""Request and response bodies. Public models never carry a secret but the redemption."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from broker.audit import Record
from broker.service.upstream import UpstreamToken
from broker.store.model import State

__all__ = [
    "Completion",
    "CompletionResult",
    "Guid",
    "LookupResult",
    "MintRequest",
    "MintResult",
    "RedemptionResult",
    "TokenRequest",
]

GUID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_SEQ = 2**63 - 1
"""Audit sequence numbers are 64-bit: a larger cursor would overflow the store."""
Guid = Annotated[str, Field(pattern=GUID_PATTERN, min_length=1, max_length=64)]


def _lower_case(guid: str) -> str:
    if guid != guid.lower():
        raise ValueError("must be lower case: it names a repository, and names are lower case")
    return guid


# An app's or a staging's guid at mint: two that differ only in case would share one
# repository (or one app namespace), so they are refused in upper case.
NamingGuid = Annotated[
    str,
    Field(pattern=GUID_PATTERN, min_length=1, max_length=64, description="lower case"),
    AfterValidator(_lower_case),
]
Name = Annotated[str, Field(pattern=GUID_PATTERN)]


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    return text


# Free text that is stored as it is (not only inside JSON): PostgreSQL text cannot hold NUL.
Text = AfterValidator(_no_nul)


def iso(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MintRequest(_Strict):
    app_guid: NamingGuid
    staging_guid: NamingGuid
    image: Annotated[str, Field(min_length=1, max_length=512)]
    username: Annotated[str, Field(min_length=1, max_length=256), Text] | None = None
    password: SecretStr | None = Field(default=None, min_length=1, max_length=4096)
    tailor: Name
    ttl_seconds: Annotated[int, Field(ge=1)] | None = None
    """A lifetime is positive; which lifetimes are accepted is policy (the service's)."""
    space_guid: Guid | None = None
    user: Annotated[str, Field(min_length=1, max_length=256), Text] | None = None


class MintResult(BaseModel):
    staging_guid: str
    token: str
    expires_at: datetime.datetime


class TokenRequest(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=4096)]


class LookupResult(BaseModel):
    staging_guid: str
    app_guid: str
    image: str
    state: State
    expires_at: datetime.datetime
    redeemed: bool


class UpstreamTokenResult(BaseModel):
    """A pull token of the upstream registry, for one repository, traded by the broker."""

    token: str
    expires_at: datetime.datetime
    realm: str
    service: str
    scope: str


class RedemptionResult(BaseModel):
    staging_guid: str
    app_guid: str
    registry: str
    image: str
    username: str | None = Field(
        description="null: no password is given (a public image, or an upstream token)"
    )
    password: str | None
    expires_at: datetime.datetime
    upstream_token: UpstreamTokenResult | None = Field(
        default=None,
        description="the pull token the broker traded the credentials for: use it, for this"
        " registry and repository only, and refresh it at"
        " POST /v1/stagings/{staging_guid}/upstream-token",
    )
    staging_policy: dict[str, Any] | None = Field(
        default=None,
        description="the operator's signature policy, which the image must satisfy before"
        " anything is published: {digest, policy (containers-policy.json, keys inline as"
        " keyData), registries.d (where signatures are stored), narrow (leave out an"
        " index's refused platforms)}; the completion names its digest. null: no policy",
    )


class Completion(_Strict):
    status: Literal["succeeded", "failed"]
    result: dict[str, Any] | None = None
    error: Annotated[str, Field(max_length=2000)] | None = None


class CompletionResult(BaseModel):
    staging_guid: str
    state: Literal["completed", "failed"]


class AuditPage(BaseModel):
    # Every field of an event is always there (null when absent): required in the schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    events: list[Record]
    next_after: int | None
    """Pass as ``after`` for the next page; null on the last page."""


class VerifyResult(BaseModel):
    intact: bool
    events_total: int
    events_valid: int
    checkpoints_total: int
    checkpoints_valid: int
    signed_through: int
    """The last event a valid signed checkpoint covers (0: none)."""
    events_unsigned: int
    """Events after ``signed_through``: chained, not yet covered by a signed checkpoint."""
    problems: list[str]
    proved: list[str] = []
    """What the newest valid checkpoints proved (at most 20, the newest last)."""
    summary: str


class RegistryToken(BaseModel):
    token: str
    access_token: str
    expires_in: int
    issued_at: str
    scope: str | None = None
    """The scopes granted, space-separated (OAuth2's ``scope``)."""
    refresh_token: str | None = None
    """For a pull credential asked ``offline``: the secret again, for clients that keep an
    identity token (the OAuth2 ``refresh_token`` grant takes it)."""


class PullerSession(BaseModel):
    username: str
    """The puller's client id."""
    password: str
    """The session: many token requests, until ``expires_at``."""
    expires_at: datetime.datetime


class PullCredential(BaseModel):
    app_guid: str
    id: str
    username: str
    password: str
    """The secret: shown once, stored by the broker as a hash only."""
    created_at: datetime.datetime
    replaced_until: datetime.datetime | None
    """When the app's earlier credentials stop working (null: there were none)."""


class PullCredentialInfo(BaseModel):
    id: str
    created_at: datetime.datetime
    created_by: str
    expires_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    live: bool


def upstream_result(token: UpstreamToken | None) -> UpstreamTokenResult | None:
    if token is None:
        return None
    return UpstreamTokenResult(
        token=token.token,
        expires_at=iso(token.expires_at),
        realm=token.realm,
        service=token.service,
        scope=token.scope,
    )


class KeptCosignature(BaseModel):
    witness: str
    """The witness's verifier key."""
    timestamp: int
    """The cosignature's time (POSIX seconds, the witness's clock)."""
    kept: bool
    """False: a cosignature of this checkpoint by this witness as new or newer is kept."""


class CosignaturesKept(BaseModel):
    size: int
    """The cosigned checkpoint's tree size."""
    cosignatures: list[KeptCosignature]
