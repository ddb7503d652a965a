"""Stagings: mint, look up, redeem, complete, cancel, sweep. No HTTP here.

Each method is one unit of work (see ``broker/service/unit.py``). Token
refusals raise :class:`~broker.errors.TokenRefused`, whose reason goes to the
audit log and metrics only. The staging policy is written here once: which
images, credentials and lifetimes a mint accepts.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.audit import AuditEvent, Kind, events
from broker.auth import Authenticated
from broker.errors import Conflict, Invalid, NotFound, TokenRefused
from broker.keys import KeyMaterial, RingWatcher
from broker.service.idempotency import Action, Idempotency, Key, Remembered, parse_key
from broker.service.unit import Unit, Units
from broker.service.upstream import Decision, Upstream, UpstreamToken
from broker.settings import Settings
from broker.store import Store
from broker.store.model import OPEN_STATES, StagingRow, State
from broker.tokens import (
    StagingClaims,
    fingerprint,
    open_credentials,
    open_token,
    seal_credentials,
    seal_token,
)
from tailor.errors import InvalidReference
from tailor.reference import parse_reference

__all__ = ["MIN_TTL", "Lookup", "Minted", "Redeemed", "Stagings"]

MIN_TTL = 30


@dataclass(frozen=True)
class Minted:
    staging_guid: str
    token: str
    expires_at: int

    def __repr__(self) -> str:  # the token is a credential
        return f"Minted(staging_guid={self.staging_guid!r})"


@dataclass(frozen=True)
class Redeemed:
    staging_guid: str
    registry: str
    image: str
    username: str | None
    password: str | None
    expires_at: int
    app_guid: str = ""
    upstream: UpstreamToken | None = None
    """The pull token the credentials were traded for; then no username, no password."""

    def __repr__(self) -> str:
        return f"Redeemed(staging_guid={self.staging_guid!r}, image={self.image!r})"


@dataclass(frozen=True)
class Lookup:
    staging_guid: str
    app_guid: str
    image: str
    state: State
    expires_at: int
    redeemed: bool


def _not_redeemed(s: StagingRow, now: int) -> str:
    """Why a staging's token could not be redeemed, from the row as it is now."""
    if s.state == "redeemed":
        return "replay: already redeemed"
    if s.state not in OPEN_STATES:
        return f"staging {s.state}"
    return "expired" if s.expires_at <= now else "not redeemable"


def _event(kind: Kind, s: StagingRow, client: str, **extra: Any) -> AuditEvent:
    return kind(
        client=client,
        app_guid=s.app_guid,
        staging_guid=s.staging_guid,
        image=s.image,
        registry=s.registry,
        registry_username=s.registry_username or None,
        token_fp=s.token_fp,
        **extra,
    )


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


@dataclass(frozen=True)
class _Verdict:
    digest: str
    signers: tuple[str, ...]


def _verdict(result: dict[str, Any] | None) -> _Verdict | None:
    """The signature policy's verdict a completion reports (``result.policy``): the digest
    of the policy that decided and the fingerprints of the keys whose signatures it
    accepted; None when there is none; Invalid when it is out of shape (it goes into the
    audit log)."""
    if not result or "policy" not in result:
        return None
    given = result["policy"]
    if not isinstance(given, dict) or not isinstance(given.get("digest"), str):
        raise Invalid("result.policy must be an object with the policy's digest")
    digest = given["digest"]
    signers = given.get("signers", [])
    if not _DIGEST.fullmatch(digest):
        raise Invalid("result.policy.digest must be sha256:<64 hex digits>")
    if (
        not isinstance(signers, list)
        or len(signers) > 64
        or not all(isinstance(f, str) and _FINGERPRINT.fullmatch(f) for f in signers)
    ):
        raise Invalid("result.policy.signers must be at most 64 key fingerprints (hex)")
    return _Verdict(digest, tuple(sorted(set(signers))))


class Stagings:
    def __init__(
        self,
        store: Store,
        units: Units,
        keys: KeyMaterial,
        ring: RingWatcher,
        settings: Settings,
        clock: Callable[[], float],
        policy_digest: str | None = None,
    ) -> None:
        self._store = store
        self._units = units
        self.policy_digest = policy_digest
        """The staging policy served at redemption (None: none): a success must name it."""
        self._keys = keys
        self._ring = ring
        self._settings = settings
        self._clock = clock
        self._idempotency = Idempotency(keys.fingerprint_key, settings.idempotency_seconds)
        self._upstream = Upstream(settings)

    def _now(self) -> int:
        return int(self._clock())

    def fingerprint(self, token: str) -> str:
        return fingerprint(self._keys.fingerprint_key, token)

    def _key(self, caller: Authenticated, header: str | None) -> Key | None:
        raw = parse_key(header)
        return None if raw is None else self._idempotency.key(caller.name, raw)

    def _seen(self, unit: Unit, key: Key | None, action: Action, request: str) -> Remembered | None:
        """What ``key`` did before, if this is its repeat (a fresh read: on PostgreSQL a
        concurrent first request with the key may just have committed)."""
        if key is None:
            return None
        return self._idempotency.find(unit.tx, key, action, request, self._now())

    def _remember(
        self,
        unit: Unit,
        key: Key | None,
        action: Action,
        request: str,
        staging_guid: str,
        answer: dict[str, Any] | None = None,
    ) -> None:
        if key is not None:
            self._idempotency.remember(
                unit.tx,
                key,
                action,
                request,
                staging_guid=staging_guid,
                now=self._now(),
                answer=answer,
            )

    def _repeated(self, unit: Unit, s: StagingRow, caller: Authenticated, action: Action) -> None:
        unit.audit(_event(events.REQUEST_REPEATED, s, caller.name, detail={"action": action}))

    def get(self, staging_guid: str) -> StagingRow | None:
        with self._store.transaction(write=False) as tx:
            return tx.get_staging(staging_guid)

    def all(self) -> list[StagingRow]:
        with self._store.transaction(write=False) as tx:
            return tx.all_stagings()

    # -- mint -----------------------------------------------------------------------------

    def _ttl(self, ttl_seconds: int | None) -> int:
        ttl = self._settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds
        top = self._settings.token_max_ttl_seconds
        if not MIN_TTL <= ttl <= top:
            raise Invalid(f"ttl_seconds must be between {MIN_TTL} and {top}")
        return ttl

    def mint(
        self,
        caller: Authenticated,
        *,
        app_guid: str,
        staging_guid: str,
        image: str,
        username: str | None,
        password: str | None,
        tailor: str,
        ttl_seconds: int | None = None,
        space_guid: str | None = None,
        user: str | None = None,
        idempotency_key: str | None = None,
    ) -> Minted:
        key = self._key(caller, idempotency_key)
        request = self._idempotency.request(
            key,
            "mint",
            {
                "app_guid": app_guid,
                "staging_guid": staging_guid,
                "image": image,
                "username": username,
                "password": password,
                "tailor": tailor,
                "ttl_seconds": ttl_seconds,
                "space_guid": space_guid,
                "user": user,
            },
        )
        try:
            ref = parse_reference(image)
        except InvalidReference as exc:
            raise Invalid(str(exc)) from None
        if (username is None) != (password is None):
            # Neither: a public image staged into a secured internal registry.
            raise Invalid("username and password go together (or neither, for a public image)")
        ttl = self._ttl(ttl_seconds)
        checked = (
            self._upstream.check(str(ref), username, password)
            if self._settings.upstream_exchange and username is not None and password is not None
            else None
        )
        now = self._now()
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
        token = seal_token(claims, self._ring.ring())
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
            cc_client=caller.name,
            token_id=claims.token_id,
            token_fp=self.fingerprint(token),
            state="open",
            created_at=now,
            expires_at=claims.expires_at,
            redeemed_at=None,
            closed_at=None,
            result=None,
        )
        bad: Exception | None = None
        minted = Minted(staging_guid, token, claims.expires_at)
        with self._units(caller) as unit:
            seen = self._seen(unit, key, "mint", request)
            # The insert checks that ``tailor`` is a registered tailor client (the common
            # case costs one statement); why it inserted nothing is read only when it did.
            if seen is not None or not unit.tx.insert_staging(row):
                bound = unit.tx.get_client(tailor)
                # A repeat (its first answer, sealed under its key), or the staging exists:
                # maybe made just now by a concurrent first request with this key.
                seen = seen or self._seen(unit, key, "mint", request)
                first = unit.tx.get_staging(staging_guid)
                if bound is None or bound.role != "tailor":
                    bad = Invalid(f"{tailor!r} is not a registered tailor client")
                elif seen is None or seen.answer is None or first is None:
                    bad = Conflict(f"staging {staging_guid} exists already")
                else:
                    minted = Minted(
                        staging_guid, str(seen.answer["token"]), int(seen.answer["exp"])
                    )
                    self._repeated(unit, first, caller, "mint")
            else:
                unit.tx.put_sealed(staging_guid, sealed)
                detail: dict[str, Any] = {"ttl_seconds": ttl, "tailor": tailor}
                if checked:
                    detail["upstream"] = checked
                if space_guid:
                    detail["space_guid"] = space_guid
                if user:
                    detail["user"] = user
                unit.audit(_event(events.TOKEN_ISSUED, row, caller.name, detail=detail))
                answer = {"token": token, "exp": claims.expires_at}
                self._remember(unit, key, "mint", request, staging_guid, answer)
        if bad is not None:
            raise bad
        return minted

    # -- lookup and redeem ----------------------------------------------------------------

    def _refusal(
        self,
        caller: Authenticated,
        token: str,
        reason: str,
        claims: StagingClaims | None,
        action: str,
        s: StagingRow | None = None,
    ) -> AuditEvent:
        return events.TOKEN_REFUSED(
            client=caller.name,
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
        self, token: str, caller: Authenticated, action: str, *, check_expiry: bool
    ) -> StagingClaims:
        """Open the token, or audit the refusal (spending the assertion) and raise."""
        reason = None
        claims = None
        try:
            claims = open_token(token, self._ring.ring(), self._now() if check_expiry else 0)
        except TokenRefused as exc:
            reason = exc.reason
        if claims is not None and caller.role == "tailor" and claims.tailor != caller.name:
            reason = "not the bound tailor"
        if reason is None and claims is not None:
            return claims
        with self._units(caller) as unit:
            unit.audit(self._refusal(caller, token, reason or "invalid", claims, action))
        raise TokenRefused(reason or "invalid")

    def lookup(self, caller: Authenticated, token: str) -> Lookup:
        claims = self._open(token, caller, "lookup", check_expiry=False)
        outcome: TokenRefused | Lookup
        with self._units(caller) as unit:
            s = unit.tx.get_staging(claims.staging_guid)
            if s is None or s.token_id != claims.token_id:
                outcome = TokenRefused("unknown staging")
                unit.audit(self._refusal(caller, token, outcome.reason, claims, "lookup"))
            else:
                state: State = s.state
                if state in OPEN_STATES and s.expires_at <= self._now():
                    state = "expired"
                outcome = Lookup(
                    s.staging_guid,
                    s.app_guid,
                    s.image,
                    state,
                    s.expires_at,
                    s.redeemed_at is not None,
                )
                unit.audit(_event(events.TOKEN_LOOKUP, s, caller.name))
        if isinstance(outcome, TokenRefused):
            raise outcome
        return outcome

    def redeem(
        self, caller: Authenticated, token: str, *, idempotency_key: str | None = None
    ) -> Redeemed:
        claims = self._open(token, caller, "redeem", check_expiry=True)
        key = self._key(caller, idempotency_key)
        request = self._idempotency.request(key, "redeem", {"token": self.fingerprint(token)})
        # The trade first, outside any transaction (it is network I/O): an unreachable or
        # refusing registry spends nothing, and the token can be presented again.
        decision = self._trade(claims, key) if self._settings.upstream_exchange else None
        now = self._now()
        with self._units(caller) as unit:
            tx = unit.tx
            opened: tuple[str | None, str | None] | None = None
            repeat = False
            # The conditional update is the single use: one winner, on any replica. It
            # matches the token's staging and id only, so it wins only for this token.
            won = tx.redeem(claims.staging_guid, claims.token_id, caller.name, now)
            s: StagingRow | None
            if won is not None:
                s, sealed = won
                # A key already used for another request refuses the action (rolled back).
                self._seen(unit, key, "redeem", request)
                opened, reason = self._unseal(s, sealed, claims)
                if opened is not None:
                    self._remember(unit, key, "redeem", request, s.staging_guid)
            else:
                # A repeat, lost, or not redeemable: decide from the row as it is now. This
                # read is a new statement after the update: on PostgreSQL (READ COMMITTED)
                # it sees a concurrent winner's commit, which the update waited for. A raced
                # token is the sign of a stolen one, so it must be named a replay, never
                # "expired" -- unless the winner was this caller's own first request with
                # this key.
                s = tx.get_staging(claims.staging_guid)
                if s is None or s.token_id != claims.token_id:
                    reason = "unknown staging"
                else:
                    repeat = self._seen(unit, key, "redeem", request) is not None
                    reason = _not_redeemed(s, now)
                    if repeat and s.state == "redeemed":
                        opened, reason = self._unseal(s, tx.get_sealed(s.staging_guid), claims)
            if opened is not None and s is not None:
                # No trade (the exchange off): the password, as before, with nothing to audit.
                given = decision or Decision("password")
                password = given.give == "password"
                result: Redeemed | TokenRefused = Redeemed(
                    s.staging_guid,
                    s.registry,
                    s.image,
                    opened[0] if password else None,
                    opened[1] if password else None,
                    s.expires_at,
                    s.app_guid,
                    given.token,
                )
                if repeat:
                    self._repeated(unit, s, caller, "redeem")
                else:
                    served = {"policy": self.policy_digest} if self.policy_digest else {}
                    unit.audit(_event(events.TOKEN_REDEEMED, s, caller.name, detail=served))
                self._audit_given(unit, s, caller, given, refresh=False)
            else:
                result = TokenRefused(reason)
                unit.audit(self._refusal(caller, token, reason, claims, "redeem", s))
        if isinstance(result, TokenRefused):
            raise result
        return result

    @staticmethod
    def _unseal(
        s: StagingRow, sealed: bytes | None, claims: StagingClaims
    ) -> tuple[tuple[str | None, str | None] | None, str]:
        """The credentials, opened with the data key the presented token carries; or None
        and why not."""
        if sealed is None:
            return None, "credentials purged"
        try:
            opened = open_credentials(
                claims.data_key, sealed, staging_guid=s.staging_guid, image=s.image
            )
        except TokenRefused as exc:
            return None, exc.reason
        return opened, ""

    def _trade(self, claims: StagingClaims, key: Key | None) -> Decision | None:
        """What the Tailor should get for this staging's credentials (``Upstream.decide``),
        when the redemption may succeed; None when it will be refused anyway (a replay,
        even one sent with a key of its own: the user's credentials are not used for it)."""
        with self._store.transaction(write=False) as tx:
            s = tx.get_staging(claims.staging_guid)
            sealed = tx.get_sealed(claims.staging_guid)
            repeat = key is not None and (
                tx.get_idempotency(key.client, key.id, self._now()) is not None
            )
        if s is None or s.token_id != claims.token_id or sealed is None:
            return None
        if not (s.state == "open" or (s.state == "redeemed" and repeat)):
            return None  # a replay: refused in the unit, no credentials used
        try:
            username, password = open_credentials(
                claims.data_key, sealed, staging_guid=s.staging_guid, image=s.image
            )
        except TokenRefused:
            return None
        return self._upstream.decide(s.image, username, password)

    def _audit_given(
        self, unit: Unit, s: StagingRow, caller: Authenticated, given: Decision, *, refresh: bool
    ) -> None:
        if given.token is not None:
            detail = {
                "scope": given.token.scope,
                "expires_in": given.lifetime,
                "realm": given.token.realm,
                "refresh": refresh,
            }
            unit.audit(_event(events.CREDENTIALS_EXCHANGED, s, caller.name, detail=detail))
        elif given.give == "password" and given.reason:
            detail = {"reason": given.reason[:300]}
            unit.audit(_event(events.CREDENTIALS_RELEASED, s, caller.name, detail=detail))

    def refresh_upstream(
        self, caller: Authenticated, staging_guid: str, token: str
    ) -> UpstreamToken:
        """A fresh upstream token for the bound Tailor's open staging: the staging token is
        presented again (its data key opens the credentials); never the password."""
        if not self._settings.upstream_exchange:
            raise Conflict("this broker trades no upstream tokens (BROKER_UPSTREAM_EXCHANGE)")
        claims = self._open(token, caller, "refresh", check_expiry=True)
        with self._store.transaction(write=False) as tx:
            s = tx.get_staging(claims.staging_guid)
            sealed = tx.get_sealed(claims.staging_guid)
        reason = None
        if claims.staging_guid != staging_guid:
            reason = "a token for another staging"
        elif s is None or s.token_id != claims.token_id:
            reason = "unknown staging"
        elif s.state != "redeemed" or s.tailor != caller.name or sealed is None:
            reason = f"staging {s.state}: no refresh"
        if reason is not None or s is None or sealed is None:
            with self._units(caller) as unit:
                unit.audit(self._refusal(caller, token, reason or "invalid", claims, "refresh", s))
            raise TokenRefused(reason or "invalid")
        username, password = open_credentials(
            claims.data_key, sealed, staging_guid=s.staging_guid, image=s.image
        )
        given = self._upstream.refresh(s.image, username, password)
        assert given.token is not None
        with self._units(caller) as unit:
            self._audit_given(unit, s, caller, given, refresh=True)
        return given.token

    # -- closing --------------------------------------------------------------------------

    def _close(
        self,
        unit: Unit,
        s: StagingRow,
        client: str,
        kind: Kind,
        result: dict[str, Any] | None,
        from_states: tuple[State, ...] = OPEN_STATES,
    ) -> bool:
        state = str(kind.closes)
        result_text = json.dumps(result, sort_keys=True) if result else None
        if not unit.tx.close_staging(s.staging_guid, from_states, state, self._now(), result_text):
            return False
        detail: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if result and kind is events.STAGING_FAILED:
            detail = {"error": str(result.get("error", ""))[:500]}
            if result.get("reason") == "policy":
                extra["reason"] = "policy"
        verdict = _verdict(result)
        if verdict is not None:
            detail["policy"] = verdict.digest
            if kind is events.STAGING_COMPLETED:
                detail["signers"] = list(verdict.signers)
        unit.audit(_event(kind, s, client, detail=detail, **extra))
        if unit.tx.delete_sealed(s.staging_guid):
            unit.audit(_event(events.CREDENTIALS_PURGED, s, client))
        return True

    @staticmethod
    def _state(unit: Unit, s: StagingRow) -> str:
        """The staging's state as it is now: after a conditional update changed nothing, the
        row read before it may be stale (on PostgreSQL it waited for another's commit)."""
        now = unit.tx.get_staging(s.staging_guid)
        return (now or s).state

    def complete(
        self,
        caller: Authenticated,
        staging_guid: str,
        *,
        succeeded: bool,
        result: dict[str, Any] | None,
        error: str | None,
        idempotency_key: str | None = None,
    ) -> str:
        kind = events.STAGING_COMPLETED if succeeded else events.STAGING_FAILED
        verdict = _verdict(result)  # Invalid when out of shape, before anything is done
        if succeeded and self.policy_digest and verdict is None:
            raise Invalid(
                "the staging policy's verdict is missing: a staging under the policy "
                f"{self.policy_digest} reports it with its success"
            )
        if succeeded and self.policy_digest and verdict and verdict.digest != self.policy_digest:
            raise Invalid(
                f"the staging policy's verdict names the policy {verdict.digest}; this broker "
                f"serves {self.policy_digest} (every replica must have the same policy files)"
            )
        key = self._key(caller, idempotency_key)
        request = self._idempotency.request(
            key,
            "complete",
            {"staging": staging_guid, "succeeded": succeeded, "result": result, "error": error},
        )
        bad: Exception | None = None
        state = str(kind.closes)
        with self._units(caller) as unit:
            s = unit.tx.get_staging(staging_guid)
            if s is None or s.tailor != caller.name:
                bad = NotFound(f"no staging {staging_guid} bound to {caller.name}")
            elif self._seen(unit, key, "complete", request):
                # The first completion's end (nothing else closes a closed staging), read
                # afresh: the row above may predate that completion's commit.
                state = self._state(unit, s)
                self._repeated(unit, s, caller, "complete")
            elif s.state == "open":
                # Only what this tailor redeemed: never a staging another token opened.
                bad = Conflict(f"staging {staging_guid} was not redeemed; there is nothing to end")
            else:
                payload: dict[str, Any] = dict(result or {})
                if error:
                    payload["error"] = error
                if self._close(unit, s, caller.name, kind, payload, ("redeemed",)):
                    self._remember(unit, key, "complete", request, staging_guid)
                elif self._seen(unit, key, "complete", request):
                    # This caller's own first completion won meanwhile (a fresh read).
                    state = self._state(unit, s)
                    self._repeated(unit, s, caller, "complete")
                else:
                    # Another ending won meanwhile: name the state it left (a fresh read).
                    bad = Conflict(f"staging {staging_guid} is already {self._state(unit, s)}")
        if bad is not None:
            raise bad
        return state

    def cancel(self, caller: Authenticated, staging_guid: str) -> None:
        bad: Exception | None = None
        with self._units(caller) as unit:
            s = unit.tx.get_staging(staging_guid)
            if s is None:
                bad = NotFound(f"no staging {staging_guid}")
            elif s.state != "cancelled" and not self._close(
                unit, s, caller.name, events.STAGING_CANCELLED, None
            ):
                # Closed meanwhile (a fresh read): by another cancel, which is this one done.
                state = self._state(unit, s)
                if state != "cancelled":
                    bad = Conflict(f"staging {staging_guid} is already {state}")
        if bad is not None:
            raise bad

    def sweep(self) -> int:
        """Close expired stagings and shred their credentials; safe on every replica at once."""
        now = self._now()
        closed = 0
        with self._units() as unit:
            unit.tx.forget_assertions(now - 600)
            unit.tx.forget_idempotency(now)
            for s in unit.tx.expired_stagings(now):
                if self._close(unit, s, "broker", events.STAGING_EXPIRED, None):
                    closed += 1
        return closed

    def image_of(self, staging_guid: str) -> str:
        """The image a staging copies (for its egress rules)."""
        staging = self.get(staging_guid)
        if staging is None:
            raise NotFound(f"no staging {staging_guid}")
        return staging.image
