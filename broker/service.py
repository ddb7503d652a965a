"""What the broker does: mint, look up, redeem, complete, cancel, sweep. No HTTP here.

Each action and its audit event are written in one transaction: if the event
cannot be written, the action does not happen. Token refusals raise
:class:`Refused`, whose reason goes to the audit log and metrics only.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.keys import KeyMaterial, RingWatcher
from broker.store import Store
from broker.store.model import OPEN_STATES, AuditEvent, ClientRow, StagingRow
from broker.store.sql import SqlTx
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

__all__ = [
    "Broker",
    "Conflict",
    "Invalid",
    "Missing",
    "Redeemed",
    "Refused",
]


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
    username: str
    password: str
    expires_at: int

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


def _iso_ms(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class Broker:
    store: Store
    keys: KeyMaterial
    ring: RingWatcher
    default_ttl: int = 900
    max_ttl: int = 3600
    clock: Callable[[], float] = time.time
    on_event: Callable[[str, str | None], None] = field(default=lambda event, reason: None)

    def now(self) -> int:
        return int(self.clock())

    def _audit(self, tx: SqlTx, event: AuditEvent) -> None:
        tx.append_audit(event, _iso_ms(self.clock()))
        self.on_event(event.event, event.reason)

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
            registry_username=s.registry_username,
            token_fp=s.token_fp,
            **extra,
        )

    # -- clients ----------------------------------------------------------------------------

    def client(self, name: str) -> ClientRow | None:
        with self.store.transaction() as tx:
            return tx.get_client(name)

    def use_assertion(self, client: str, jti: str, expires_at: int) -> bool:
        with self.store.transaction() as tx:
            return tx.use_assertion(client, jti, expires_at)

    # -- mint ---------------------------------------------------------------------------------

    def mint(
        self,
        *,
        cc: str,
        app_guid: str,
        staging_guid: str,
        image: str,
        username: str,
        password: str,
        tailor: str,
        ttl_seconds: int | None = None,
        space_guid: str | None = None,
        user: str | None = None,
    ) -> tuple[str, int]:
        try:
            ref = parse_reference(image)
        except InvalidReference as exc:
            raise Invalid(str(exc)) from None
        ttl = self.default_ttl if ttl_seconds is None else ttl_seconds
        if not 30 <= ttl <= self.max_ttl:
            raise Invalid(f"ttl_seconds must be between 30 and {self.max_ttl}")
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
            registry_username=username,
            tailor=tailor,
            cc_client=cc,
            token_id=claims.token_id,
            token_fp=self.fingerprint(token),
            state="open",
            created_at=now,
            expires_at=claims.expires_at,
            redeemed_at=None,
            closed_at=None,
            result=None,
        )
        with self.store.transaction() as tx:
            bound = tx.get_client(tailor)
            if bound is None or bound.role != "tailor":
                raise Invalid(f"{tailor!r} is not a registered tailor client")
            if not tx.insert_staging(row):
                raise Conflict(f"staging {staging_guid} exists already")
            tx.put_sealed(staging_guid, sealed)
            detail = {"ttl_seconds": ttl, "tailor": tailor}
            if space_guid:
                detail["space_guid"] = space_guid
            if user:
                detail["user"] = user
            self._audit(tx, self._staging_event("token.issued", row, cc, detail=detail))
        return token, claims.expires_at

    # -- lookup and redeem --------------------------------------------------------------------

    def _refuse(self, client: str, token: str, reason: str, claims: StagingClaims | None,
                action: str) -> Refused:  # fmt: skip
        event = AuditEvent(
            event="token.refused",
            client=client,
            app_guid=claims.app_guid if claims else None,
            staging_guid=claims.staging_guid if claims else None,
            image=claims.image if claims else None,
            registry=claims.registry if claims else None,
            token_fp=self.fingerprint(token) if isinstance(token, str) else None,
            reason=reason,
            detail={"action": action},
        )
        with self.store.transaction() as tx:
            self._audit(tx, event)
        return Refused(reason)

    def _open(
        self, token: str, caller: ClientRow, action: str, *, check_expiry: bool
    ) -> StagingClaims:
        now = self.now()
        try:
            claims = open_token(token, self.ring.ring(), now if check_expiry else 0)
        except InvalidToken as exc:
            raise self._refuse(caller.name, token, exc.reason, None, action) from None
        if caller.role == "tailor" and claims.tailor != caller.name:
            raise self._refuse(caller.name, token, "not the bound tailor", claims, action)
        return claims

    def lookup(self, *, caller: ClientRow, token: str) -> Lookup:
        claims = self._open(token, caller, "lookup", check_expiry=False)
        with self.store.transaction() as tx:
            s = tx.get_staging(claims.staging_guid)
            if s is None or s.token_id != claims.token_id:
                outcome: Refused | Lookup = Refused("unknown staging")
                event = AuditEvent(
                    "token.refused",
                    caller.name,
                    claims.app_guid,
                    claims.staging_guid,
                    token_fp=self.fingerprint(token),
                    reason="unknown staging",
                    detail={"action": "lookup"},
                )
                self._audit(tx, event)
            else:
                state = s.state
                if state in OPEN_STATES and s.expires_at <= self.now():
                    state = "expired"
                outcome = Lookup(s.staging_guid, s.app_guid, s.image, state, s.expires_at,
                                 s.redeemed_at is not None)  # fmt: skip
                self._audit(tx, self._staging_event("token.lookup", s, caller.name))
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    def redeem(self, *, caller: ClientRow, token: str) -> Redeemed:
        claims = self._open(token, caller, "redeem", check_expiry=True)
        now = self.now()
        result: Redeemed | Refused
        with self.store.transaction() as tx:
            s = tx.get_staging(claims.staging_guid)
            sealed = None
            if s is None or s.token_id != claims.token_id:
                reason = "unknown staging"
            elif tx.redeem(claims.staging_guid, claims.token_id, caller.name, now):
                sealed = tx.get_sealed(claims.staging_guid)
                reason = "" if sealed else "credentials purged"
            elif s.state == "redeemed":
                reason = "replay: already redeemed"
            elif s.state not in OPEN_STATES:
                reason = f"staging {s.state}"
            else:
                reason = "expired"
            opened = None
            if sealed is not None and s is not None:
                try:
                    opened = open_credentials(
                        claims.data_key, sealed, staging_guid=s.staging_guid, image=s.image
                    )
                except InvalidToken as exc:
                    reason = exc.reason
            if opened is not None and s is not None:
                username, password = opened
                result = Redeemed(s.registry, s.image, username, password, s.expires_at)
                self._audit(tx, self._staging_event("token.redeemed", s, caller.name))
            else:
                result = Refused(reason)
                event = AuditEvent(
                    "token.refused", caller.name, claims.app_guid, claims.staging_guid,
                    claims.image, claims.registry, s.registry_username if s else None,
                    self.fingerprint(token), reason, {"action": "redeem"},
                )  # fmt: skip
                self._audit(tx, event)
        if isinstance(result, Refused):
            raise result
        return result

    # -- closing ------------------------------------------------------------------------------

    def _close(self, tx: SqlTx, s: StagingRow, client: str, state: str,
               result: dict[str, Any] | None) -> None:  # fmt: skip
        result_text = json.dumps(result, sort_keys=True) if result else None
        if not tx.close_staging(s.staging_guid, OPEN_STATES, state, self.now(), result_text):
            raise Conflict(f"staging {s.staging_guid} is already closed")
        detail = (
            {"reason": str(result.get("error", ""))[:500]} if result and state == "failed" else {}
        )
        self._audit(tx, self._staging_event(f"staging.{state}", s, client, detail=detail))
        if tx.delete_sealed(s.staging_guid):
            self._audit(tx, self._staging_event("credentials.purged", s, client))

    def complete(self, *, caller: ClientRow, staging_guid: str, succeeded: bool,
                 result: dict[str, Any] | None, error: str | None) -> str:  # fmt: skip
        with self.store.transaction() as tx:
            s = tx.get_staging(staging_guid)
            if s is None or s.tailor != caller.name:
                raise Missing(f"no staging {staging_guid} bound to {caller.name}")
            if s.state not in OPEN_STATES:
                raise Conflict(f"staging {staging_guid} is already {s.state}")
            state = "completed" if succeeded else "failed"
            payload: dict[str, Any] = dict(result or {})
            if error:
                payload["error"] = error
            self._close(tx, s, caller.name, state, payload)
        return state

    def cancel(self, *, caller: ClientRow, staging_guid: str) -> None:
        with self.store.transaction() as tx:
            s = tx.get_staging(staging_guid)
            if s is None:
                raise Missing(f"no staging {staging_guid}")
            if s.state == "cancelled":
                return
            if s.state not in OPEN_STATES:
                raise Conflict(f"staging {staging_guid} is already {s.state}")
            self._close(tx, s, caller.name, "cancelled", None)

    def sweep(self) -> int:
        """Close expired stagings and shred their credentials; safe on every replica at once."""
        now = self.now()
        closed = 0
        with self.store.transaction() as tx:
            tx.forget_assertions(now - 600)
            for s in tx.expired_stagings(now):
                if tx.close_staging(s.staging_guid, OPEN_STATES, "expired", now, None):
                    self._audit(tx, self._staging_event("staging.expired", s, "broker"))
                    if tx.delete_sealed(s.staging_guid):
                        self._audit(tx, self._staging_event("credentials.purged", s, "broker"))
                    closed += 1
        return closed
