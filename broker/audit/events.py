"""The event catalog: every kind of audit event, the fields each carries, and the record shape.

One definition serves every reader and writer: the service builds events through
their :class:`Kind`, the store's columns are :data:`HASHED` plus the two hashes,
metrics count by kind, and the page, the API and the CLI list and filter by
:data:`CATALOG`. Pure.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from broker.audit.canonical import canonical

__all__ = [
    "AUDIT_MIGRATED",
    "CATALOG",
    "CLIENT_ADDED",
    "CLIENT_REMOVED",
    "CREDENTIALS_EXCHANGED",
    "CREDENTIALS_PURGED",
    "CREDENTIALS_RELEASED",
    "HASHED",
    "PRUNE_DELETED",
    "PULLER_SESSION",
    "PULL_CREDENTIAL_ISSUED",
    "PULL_CREDENTIAL_REVOKED",
    "REGISTRY_TOKEN",
    "REQUEST_REPEATED",
    "STAGINGS_FORGOTTEN",
    "STAGING_CANCELLED",
    "STAGING_COMPLETED",
    "STAGING_EXPIRED",
    "STAGING_FAILED",
    "TOKEN_ISSUED",
    "TOKEN_LOOKUP",
    "TOKEN_REDEEMED",
    "TOKEN_REFUSED",
    "WITNESS_ADDED",
    "WITNESS_REMOVED",
    "AuditEvent",
    "Kind",
    "Record",
    "timestamp",
]


@dataclass(frozen=True)
class AuditEvent:
    """One decision, as a writer gives it. ``token_fp`` is a keyed fingerprint, never the
    token; no field ever holds a secret."""

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


HASHED = ("seq", "at", *(f.name for f in fields(AuditEvent)))
"""The fields an event's hash covers (with ``prev``), and the store's columns before the hashes."""


@dataclass(frozen=True, kw_only=True)
class Record(AuditEvent):
    """An event as stored: its place in the log and its hashes."""

    seq: int
    at: str
    prev_hash: str | None = None
    hash: str | None = None

    def body(self) -> dict[str, Any]:
        """The hashed fields, as the chain sees them (``detail`` is ``{}`` when empty)."""
        out = {name: getattr(self, name) for name in HASHED}
        out["detail"] = self.detail or {}
        return out

    def as_dict(self) -> dict[str, Any]:
        """Every field, as the API and ``broker audit list --format json`` show it."""
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}

    def row(self) -> dict[str, Any]:
        """The store's columns: ``detail`` as its canonical JSON text (NULL when empty)."""
        out = dict(vars(self))
        out["detail"] = canonical(self.detail).decode() if self.detail else None
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Record:
        values: dict[str, Any] = {name: row.get(name) for name in (*HASHED, "prev_hash", "hash")}
        values["seq"] = int(row["seq"])
        values["detail"] = json.loads(row["detail"]) if row.get("detail") else {}
        return cls(**values)


def timestamp(ts: float) -> str:
    """The audit log's time format: ISO 8601, UTC, milliseconds."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


_STAGING = frozenset(
    {"app_guid", "staging_guid", "image", "registry", "registry_username", "token_fp"}
)


_ALWAYS = frozenset({"client", "detail"})


@dataclass(frozen=True)
class Kind:
    """One kind of event: its name, when it is written, and what it may carry."""

    name: str
    about: str
    """When it is written: one line, for the docs and the page."""
    label: str
    """The word the page's staging timeline uses."""
    carries: frozenset[str] = frozenset()
    """Which of AuditEvent's fields it may set, besides ``client``."""
    detail: tuple[str, ...] = ()
    """The keys its ``detail`` may hold."""
    closes: str | None = None
    """The final staging state it records, for ``staging.*`` events."""

    def __call__(self, **values: Any) -> AuditEvent:
        """An event of this kind; a field it does not carry is a programming error."""
        detail = values.get("detail") or {}
        if not (values.keys() <= self.carries | _ALWAYS and detail.keys() <= set(self.detail)):
            extra = [*(values.keys() - self.carries - _ALWAYS)]
            extra += [f"detail.{k}" for k in detail.keys() - set(self.detail)]
            raise ValueError(f"a {self.name} event carries no {', '.join(sorted(extra))}")
        return AuditEvent(self.name, **values)


def _closing(
    state: str, about: str, detail: tuple[str, ...] = (), carries: frozenset[str] = _STAGING
) -> Kind:
    return Kind(f"staging.{state}", about, state, carries, detail, closes=state)


TOKEN_ISSUED = Kind(
    "token.issued",
    "cc minted a staging token (POST /v1/staging-tokens)",
    "minted",
    _STAGING,
    ("ttl_seconds", "tailor", "space_guid", "user", "upstream"),
)
TOKEN_LOOKUP = Kind("token.lookup", "a token was looked up", "looked up", _STAGING)
TOKEN_REDEEMED = Kind(
    "token.redeemed",
    "the bound tailor redeemed a token; detail.policy: the staging policy served with it",
    "redeemed",
    _STAGING,
    ("policy",),
)
TOKEN_REFUSED = Kind(
    "token.refused",
    "a lookup or redemption was refused; reason says why",
    "refused",
    _STAGING | {"reason"},
    ("action",),
)
REQUEST_REPEATED = Kind(
    "request.repeated",
    "a mint, redemption or completion was repeated with its Idempotency-Key; the caller got"
    " the first answer again (a redemption's credentials opened again from its token)",
    "repeated",
    _STAGING,
    ("action",),
)
STAGING_COMPLETED = _closing(
    "completed",
    "the tailor reported success; detail.policy and detail.signers: the staging policy that"
    " accepted the image and the keys whose signatures it accepted",
    ("policy", "signers"),
)
STAGING_FAILED = _closing(
    "failed",
    "the tailor reported failure; detail.error says why (reason policy: the staging policy"
    " refused the image, detail.policy names it)",
    ("error", "policy"),
    _STAGING | {"reason"},
)
STAGING_CANCELLED = _closing("cancelled", "cc cancelled the staging")
STAGING_EXPIRED = _closing("expired", "the sweeper closed a staging whose token expired")
CREDENTIALS_PURGED = Kind(
    "credentials.purged",
    "a closed staging's sealed credentials were deleted",
    "credentials purged",
    _STAGING,
)
CREDENTIALS_EXCHANGED = Kind(
    "credentials.exchanged",
    "the broker traded the staging's credentials for an upstream pull token (never the token);"
    " detail: scope, lifetime, refresh",
    "credentials exchanged",
    _STAGING,
    ("scope", "expires_in", "realm", "refresh"),
)
CREDENTIALS_RELEASED = Kind(
    "credentials.released",
    "the password itself went to the Tailor (no token to be had); detail.reason says why",
    "password released",
    _STAGING,
    ("reason",),
)
CLIENT_ADDED = Kind("client.added", "broker clients add", "client added", detail=("role",))
CLIENT_REMOVED = Kind("client.removed", "broker clients remove", "client removed")
REGISTRY_TOKEN = Kind(
    "registry.token",
    "the internal registry's token server answered; reason 'refused' if a scope was cut",
    "registry.token",
    frozenset({"staging_guid", "app_guid", "reason"}),
    ("service", "granted", "refused"),
)
PULL_CREDENTIAL_ISSUED = Kind(
    "pull_credential.issued",
    "cc got a pull credential for an app; detail.replaced: the ones it rotates out, live"
    " until detail.replaced_until",
    "pull credential issued",
    frozenset({"app_guid"}),
    ("id", "replaced", "replaced_until"),
)
PULL_CREDENTIAL_REVOKED = Kind(
    "pull_credential.revoked",
    "cc revoked an app's pull credentials (the app was deleted)",
    "pull credentials revoked",
    frozenset({"app_guid"}),
    ("revoked",),
)
PULLER_SESSION = Kind(
    "puller.session",
    "a puller traded an assertion for a pull session (docker-credential-stager)",
    "puller session",
    detail=("expires_at",),
)
PRUNE_DELETED = Kind(
    "prune.deleted",
    "broker prune --apply deleted a manifest",
    "pruned",
    detail=("repository", "digest", "tags"),
)
STAGINGS_FORGOTTEN = Kind(
    "stagings.forgotten",
    "the sweeper deleted the rows of closed stagings past BROKER_STAGING_RETENTION whose"
    " repositories prune found gone; detail: how many, closed from and until (their events"
    " stay)",
    "stagings forgotten",
    detail=("count", "closed_from", "closed_until", "retention_seconds"),
)
AUDIT_MIGRATED = Kind(
    "audit.migrated",
    "the events of an older broker's hash chain were verified and adopted as the log's"
    " first leaves; detail: the chain's head hash and its number of events",
    "audit log adopted",
    detail=("chain_head", "chain_events"),
)
WITNESS_ADDED = Kind(
    "witness.added",
    "broker audit witnesses add: the log accepts and serves this witness's cosignatures;"
    " detail.vkey: its verifier key",
    "witness added",
    detail=("vkey",),
)
WITNESS_REMOVED = Kind(
    "witness.removed",
    "broker audit witnesses remove: the log no longer accepts or serves its cosignatures",
    "witness removed",
    detail=("vkey",),
)

CATALOG: dict[str, Kind] = {
    k.name: k
    for k in (
        TOKEN_ISSUED,
        TOKEN_LOOKUP,
        TOKEN_REDEEMED,
        TOKEN_REFUSED,
        REQUEST_REPEATED,
        STAGING_COMPLETED,
        STAGING_FAILED,
        STAGING_CANCELLED,
        STAGING_EXPIRED,
        CREDENTIALS_PURGED,
        CREDENTIALS_EXCHANGED,
        CREDENTIALS_RELEASED,
        CLIENT_ADDED,
        CLIENT_REMOVED,
        REGISTRY_TOKEN,
        PULL_CREDENTIAL_ISSUED,
        PULL_CREDENTIAL_REVOKED,
        PULLER_SESSION,
        PRUNE_DELETED,
        STAGINGS_FORGOTTEN,
        AUDIT_MIGRATED,
        WITNESS_ADDED,
        WITNESS_REMOVED,
    )
}
"""Every kind, in the order the docs and the page list them."""
