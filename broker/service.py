"""What the broker does: mint, look up, redeem, complete, cancel, sweep. No HTTP here.

Each request is one transaction: the caller's assertion id is spent, the action
is taken and its audit event written together; if any of it cannot be written,
none of it happens. Outcomes that are refusals are decided inside the
transaction and raised after it commits, so the refusal is audited and the
assertion stays spent. Token refusals raise :class:`Refused`, whose reason goes
to the audit log and metrics only.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit import (
    ChainEvent,
    Checkpoint,
    Report,
    sign_checkpoint,
    timestamp,
    verify_chain,
)
from broker.auth import AuthFailed, Verified
from broker.keys import KeyMaterial, RingWatcher
from broker.registryauth import (
    MAX_SCOPES,
    Access,
    Scope,
    decide,
    parse_scope,
    staging_repository,
)
from broker.store import Store
from broker.store.model import (
    OPEN_STATES,
    AuditEvent,
    AuditFilter,
    AuditRow,
    ClientRow,
    StagingRow,
)
from broker.store.sql import SqlTx, row_body
from broker.tokens import (
    InvalidToken,
    StagingClaims,
    fingerprint,
    open_credentials,
    open_token,
    seal_credentials,
    seal_token,
)
from tailor.errors import InvalidReference
from tailor.reference import parse_reference

__all__ = ["Broker", "Conflict", "Invalid", "Lookup", "Missing", "Redeemed", "Refused"]

_CLIENT_CACHE_SECONDS = 2.0
_VERIFY_PAGE = 5000  # audit events per read transaction when verifying the chain


class Refused(Exception):
    """A staging token was refused; callers all see the same answer."""

    def __init__(self, reason: str) -> None:
        super().__init__("staging token refused")
        self.reason = reason


class Invalid(Exception):
    """A request that is well-formed JSON but not acceptable (422)."""


class Conflict(Exception):
    """The staging exists already, or is closed (409)."""


class Missing(Exception):
    """No such staging for this caller (404)."""


@dataclass(frozen=True)
class Redeemed:
    registry: str
    image: str
    username: str | None
    password: str | None
    expires_at: int
    app_guid: str = ""

    def __repr__(self) -> str:
        return f"Redeemed(registry={self.registry!r}, image={self.image!r})"


@dataclass(frozen=True)
class Lookup:
    staging_guid: str
    app_guid: str
    image: str
    state: str
    expires_at: int
    redeemed: bool


class _Unit:
    """One transaction's work: its audit events are announced only once it commits."""

    def __init__(self, tx: SqlTx, broker: Broker) -> None:
        self.tx = tx
        self._broker = broker
        self.events: list[AuditEvent] = []
        self.head: tuple[int, str] | None = None

    def audit(self, event: AuditEvent) -> None:
        broker = self._broker
        at = timestamp(broker.clock())
        seq, digest = self.tx.append_audit(event, at, floor=self.head or broker.head)
        self.head = (seq, digest)
        self.events.append(event)
        if seq % broker.checkpoint_every == 0:
            self.tx.add_checkpoint(broker.sign_checkpoint(seq, digest, at))

    def spend(self, caller: Verified | None) -> None:
        """Spend the assertion's jti here, so it commits (or not) with the action."""
        if caller and not self.tx.use_assertion(caller.client.name, caller.jti, caller.expires_at):
            raise AuthFailed("replayed assertion")


@dataclass
class Broker:
    store: Store
    keys: KeyMaterial
    ring: RingWatcher
    default_ttl: int = 900
    max_ttl: int = 3600
    clock: Callable[[], float] = time.time
    on_event: Callable[[str, str | None], None] = field(default=lambda event, reason: None)
    checkpoint_every: int = 100
    head: tuple[int, str] | None = None
    """The newest (seq, hash) this process appended: the log must never end before it."""
    _clients: dict[str, tuple[float, ClientRow | None]] = field(default_factory=dict, repr=False)

    def now(self) -> int:
        return int(self.clock())

    @contextmanager
    def _unit(self) -> Iterator[_Unit]:
        with self.store.transaction() as tx:
            unit = _Unit(tx, self)
            yield unit
        if unit.head and (self.head is None or unit.head[0] > self.head[0]):
            self.head = unit.head
        for event in unit.events:
            self.on_event(event.event, event.reason)

    # -- the audit chain ----------------------------------------------------------------------

    def sign_checkpoint(self, seq: int, head: str, at: str) -> Checkpoint:
        return sign_checkpoint(self.keys.audit_key, self.keys.audit_kid, seq, head, at)

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head if events came since the last checkpoint (timer, shutdown)."""
        with self.store.transaction() as tx:
            seq, head = tx.audit_head()
            if seq == 0 or seq <= tx.last_checkpoint_seq():
                return None
            cp = self.sign_checkpoint(seq, head, timestamp(self.clock()))
            tx.add_checkpoint(cp)
        return cp

    def audit_page(self, after: int, limit: int, filters: AuditFilter | None) -> list[AuditRow]:
        with self.store.transaction(write=False) as tx:
            return tx.audit_events(after=after, limit=limit, filters=filters)

    def verify_audit(self) -> Report:
        """Verify the whole stored chain, and that it reaches what this process appended.
        Slow for a long log (it reads every event): callers keep it off the event loop."""
        return verify_stored_chain(self.store, self.keys.audit_public, self.head)

    def fingerprint(self, token: str) -> str:
        return fingerprint(self.keys.fingerprint_key, token)

    def _staging_event(self, name: str, s: StagingRow, client: str, **extra: Any) -> AuditEvent:
        return AuditEvent(
            event=name,
            client=client,
            app_guid=s.app_guid,
            staging_guid=s.staging_guid,
            image=s.image,
            registry=s.registry,
            registry_username=s.registry_username or None,
            token_fp=s.token_fp,
            **extra,
        )

    # -- clients ----------------------------------------------------------------------------

    def client(self, name: str) -> ClientRow | None:
        """The registered client; cached a couple of seconds (removal takes that long)."""
        now = time.monotonic()
        hit = self._clients.get(name)
        if hit and now - hit[0] < _CLIENT_CACHE_SECONDS:
            return hit[1]
        with self.store.transaction(write=False) as tx:
            row = tx.get_client(name)
        if len(self._clients) > 10000:
            self._clients.clear()
        self._clients[name] = (now, row)
        return row

    def staging(self, staging_guid: str) -> StagingRow | None:
        with self.store.transaction(write=False) as tx:
            return tx.get_staging(staging_guid)

    def spend_assertion(self, caller: Verified) -> None:
        """For requests with no write of their own: spend the jti in a transaction of its own."""
        with self._unit() as unit:
            unit.spend(caller)

    # -- mint ---------------------------------------------------------------------------------

    def mint(
        self,
        *,
        caller: Verified,
        app_guid: str,
        staging_guid: str,
        image: str,
        username: str | None,
        password: str | None,
        tailor: str,
        ttl_seconds: int | None = None,
        space_guid: str | None = None,
        user: str | None = None,
    ) -> tuple[str, int]:
        try:
            ref = parse_reference(image)
            bad: Exception | None = None
        except InvalidReference as exc:
            bad = Invalid(str(exc))
        ttl = self.default_ttl if ttl_seconds is None else ttl_seconds
        if bad is None and (username is None) != (password is None):
            bad = Invalid("username and password go together (or neither, for a public image)")
        if bad is None and not 30 <= ttl <= self.max_ttl:
            bad = Invalid(f"ttl_seconds must be between 30 and {self.max_ttl}")
        if bad is not None:
            self.spend_assertion(caller)
            raise bad
        now = self.now()
        claims = StagingClaims(
            token_id=secrets.token_hex(16),
            staging_guid=staging_guid,
            app_guid=app_guid,
            image=str(ref),
            registry=ref.registry,
            tailor=tailor,
            issued_at=now,
            expires_at=now + ttl,
            data_key=secrets.token_bytes(32),
        )
        token = seal_token(claims, self.ring.ring())
        sealed = seal_credentials(
            claims.data_key,
            staging_guid=staging_guid,
            image=claims.image,
            username=username,
            password=password,
        )
        row = StagingRow(
            staging_guid=staging_guid,
            app_guid=app_guid,
            space_guid=space_guid,
            pushed_by=user,
            image=claims.image,
            registry=claims.registry,
            registry_username=username or "",
            tailor=tailor,
            cc_client=caller.client.name,
            token_id=claims.token_id,
            token_fp=self.fingerprint(token),
            state="open",
            created_at=now,
            expires_at=claims.expires_at,
            redeemed_at=None,
            closed_at=None,
            result=None,
        )
        with self._unit() as unit:
            unit.spend(caller)
            bound = unit.tx.get_client(tailor)
            if bound is None or bound.role != "tailor":
                bad = Invalid(f"{tailor!r} is not a registered tailor client")
            elif not unit.tx.insert_staging(row):
                bad = Conflict(f"staging {staging_guid} exists already")
            else:
                unit.tx.put_sealed(staging_guid, sealed)
                detail: dict[str, Any] = {"ttl_seconds": ttl, "tailor": tailor}
                if space_guid:
                    detail["space_guid"] = space_guid
                if user:
                    detail["user"] = user
                unit.audit(
                    self._staging_event("token.issued", row, caller.client.name, detail=detail)
                )
        if bad is not None:
            raise bad
        return token, claims.expires_at

    # -- lookup and redeem --------------------------------------------------------------------

    def _refusal(
        self,
        caller: Verified,
        token: str,
        reason: str,
        claims: StagingClaims | None,
        action: str,
        s: StagingRow | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            event="token.refused",
            client=caller.client.name,
            app_guid=claims.app_guid if claims else None,
            staging_guid=claims.staging_guid if claims else None,
            image=claims.image if claims else None,
            registry=claims.registry if claims else None,
            registry_username=(s.registry_username or None) if s else None,
            token_fp=self.fingerprint(token),
            reason=reason,
            detail={"action": action},
        )

    def _open(
        self, token: str, caller: Verified, action: str, *, check_expiry: bool
    ) -> StagingClaims:
        """Open the token, or audit the refusal (spending the assertion) and raise."""
        now = self.now()
        reason = None
        claims = None
        try:
            claims = open_token(token, self.ring.ring(), now if check_expiry else 0)
        except InvalidToken as exc:
            reason = exc.reason
        if claims is not None and caller.client.role == "tailor":
            if claims.tailor != caller.client.name:
                reason = "not the bound tailor"
        if reason is None and claims is not None:
            return claims
        with self._unit() as unit:
            unit.spend(caller)
            unit.audit(self._refusal(caller, token, reason or "invalid", claims, action))
        raise Refused(reason or "invalid")

    def lookup(self, *, caller: Verified, token: str) -> Lookup:
        claims = self._open(token, caller, "lookup", check_expiry=False)
        outcome: Refused | Lookup
        with self._unit() as unit:
            unit.spend(caller)
            s = unit.tx.get_staging(claims.staging_guid)
            if s is None or s.token_id != claims.token_id:
                outcome = Refused("unknown staging")
                unit.audit(self._refusal(caller, token, outcome.reason, claims, "lookup"))
            else:
                state = s.state
                if state in OPEN_STATES and s.expires_at <= self.now():
                    state = "expired"
                outcome = Lookup(
                    s.staging_guid,
                    s.app_guid,
                    s.image,
                    state,
                    s.expires_at,
                    s.redeemed_at is not None,
                )
                unit.audit(self._staging_event("token.lookup", s, caller.client.name))
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    def redeem(self, *, caller: Verified, token: str) -> Redeemed:
        claims = self._open(token, caller, "redeem", check_expiry=True)
        now = self.now()
        name = caller.client.name
        with self._unit() as unit:
            unit.spend(caller)
            tx = unit.tx
            s = tx.get_staging(claims.staging_guid)
            opened: tuple[str | None, str | None] | None = None
            if s is None or s.token_id != claims.token_id:
                reason = "unknown staging"
            elif tx.redeem(claims.staging_guid, claims.token_id, name, now):
                # The conditional update above is the single use: one winner, on any replica.
                sealed = tx.get_sealed(claims.staging_guid)
                reason = "credentials purged"
                if sealed is not None:
                    try:
                        opened = open_credentials(
                            claims.data_key, sealed, staging_guid=s.staging_guid, image=s.image
                        )
                    except InvalidToken as exc:
                        reason = exc.reason
            elif s.state == "redeemed":
                reason = "replay: already redeemed"
            elif s.state not in OPEN_STATES:
                reason = f"staging {s.state}"
            else:
                reason = "expired"
            if opened is not None and s is not None:
                result: Redeemed | Refused = Redeemed(
                    s.registry, s.image, opened[0], opened[1], s.expires_at, s.app_guid
                )
                unit.audit(self._staging_event("token.redeemed", s, name))
            else:
                result = Refused(reason)
                unit.audit(self._refusal(caller, token, reason, claims, "redeem", s))
        if isinstance(result, Refused):
            raise result
        return result

    # -- closing ------------------------------------------------------------------------------

    def _close(
        self, unit: _Unit, s: StagingRow, client: str, state: str, result: dict[str, Any] | None
    ) -> bool:
        result_text = json.dumps(result, sort_keys=True) if result else None
        if not unit.tx.close_staging(s.staging_guid, OPEN_STATES, state, self.now(), result_text):
            return False
        detail = {}
        if result and state == "failed":
            detail = {"error": str(result.get("error", ""))[:500]}
        unit.audit(self._staging_event(f"staging.{state}", s, client, detail=detail))
        if unit.tx.delete_sealed(s.staging_guid):
            unit.audit(self._staging_event("credentials.purged", s, client))
        return True

    def complete(
        self,
        *,
        caller: Verified,
        staging_guid: str,
        succeeded: bool,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> str:
        name = caller.client.name
        state = "completed" if succeeded else "failed"
        with self._unit() as unit:
            unit.spend(caller)
            s = unit.tx.get_staging(staging_guid)
            bad: Exception | None = None
            if s is None or s.tailor != name:
                bad = Missing(f"no staging {staging_guid} bound to {name}")
            else:
                payload: dict[str, Any] = dict(result or {})
                if error:
                    payload["error"] = error
                if not self._close(unit, s, name, state, payload):
                    bad = Conflict(f"staging {staging_guid} is already {s.state}")
        if bad is not None:
            raise bad
        return state

    def cancel(self, *, caller: Verified, staging_guid: str) -> None:
        name = caller.client.name
        with self._unit() as unit:
            unit.spend(caller)
            s = unit.tx.get_staging(staging_guid)
            bad: Exception | None = None
            if s is None:
                bad = Missing(f"no staging {staging_guid}")
            elif s.state != "cancelled" and not self._close(unit, s, name, "cancelled", None):
                bad = Conflict(f"staging {staging_guid} is already {s.state}")
        if bad is not None:
            raise bad

    def registry_access(
        self, *, caller: Verified, scopes: list[str], prefix: str, service: str
    ) -> list[Access]:
        """What the internal registry token grants ``caller``; audited, grants and refusals."""
        name, role = caller.client.name, caller.client.role
        granted: list[Access] = []
        refused: list[str] = []
        with self._unit() as unit:
            unit.spend(caller)
            stagings = unit.tx.open_stagings_for(name) if role == "tailor" else []
            for text in scopes[:MAX_SCOPES]:
                scope = parse_scope(text)
                actions = decide(role, name, scope, stagings, prefix) if scope else ()
                if scope is not None and actions:
                    granted.append(Access(scope.type, scope.name, actions))
                if scope is None or set(scope.actions) - set(actions):
                    refused.append(text[:200])
            staging = next(
                (
                    s.staging_guid
                    for s in stagings
                    if any(
                        a.name == staging_repository(prefix, s.app_guid, s.staging_guid)
                        for a in granted
                    )
                ),
                None,
            )
            unit.audit(
                AuditEvent(
                    "registry.token",
                    name,
                    staging_guid=staging,
                    reason="refused" if refused else None,
                    detail={
                        "service": service,
                        "granted": [str(Scope(a.type, a.name, a.actions)) for a in granted],
                        "refused": refused,
                    },
                )
            )
        return granted

    def sweep(self) -> int:
        """Close expired stagings and shred their credentials; safe on every replica at once."""
        now = self.now()
        closed = 0
        with self._unit() as unit:
            unit.tx.forget_assertions(now - 600)
            for s in unit.tx.expired_stagings(now):
                if self._close(unit, s, "broker", "expired", None):
                    closed += 1
        return closed


def chain_event(row: AuditRow) -> ChainEvent:
    return ChainEvent(row.seq, str(row.prev_hash), str(row.hash), row_body(row))


def verify_stored_chain(
    store: Store,
    keys: Mapping[str, ed25519.Ed25519PublicKey],
    expected_head: tuple[int, str] | None = None,
) -> Report:
    """Verify the chain in ``store``, streamed a page at a time (constant memory).

    Each page is read in its own short transaction, so a long verification never
    pins one snapshot (with SQLite that would stop WAL checkpoints and let the WAL
    grow for as long as it runs). The log is append-only and pages go by seq, so
    events appended meanwhile are simply verified too. Checkpoints are read first:
    each was committed with or after its event, so the pages read next include
    every event a checkpoint names."""
    with store.transaction(write=False) as tx:
        checkpoints = tx.checkpoints()

    def events() -> Iterator[ChainEvent]:
        after = 0
        while True:
            with store.transaction(write=False) as tx:
                page = tx.audit_events(after=after, limit=_VERIFY_PAGE)
            if not page:
                return
            yield from (chain_event(row) for row in page)
            after = page[-1].seq

    def locate(digest: str) -> int | None:
        with store.transaction(write=False) as tx:
            return tx.seq_of_hash(digest)

    return verify_chain(events(), checkpoints, keys, expected_head=expected_head, locate=locate)
