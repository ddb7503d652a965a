"""Grants on the internal registry: what a client's registry token allows, audited, and the
broker's own tokens (for pruning). The policy itself is ``broker/registryauth.py`` (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from broker.audit import events, timestamp
from broker.auth import Authenticated
from broker.errors import Invalid
from broker.keys import KeyMaterial
from broker.registryauth import (
    MAX_SCOPES,
    Scope,
    decide,
    issue_token,
    parse_scope,
)
from broker.service.pullcreds import username_of
from broker.service.unit import Unit, Units
from broker.settings import Settings
from broker.store.model import StagingRow
from tailor.naming import staging_repository

__all__ = ["RegistryGrants"]

_OWN_TOKEN_SECONDS = 300


class RegistryGrants:
    def __init__(
        self, units: Units, keys: KeyMaterial, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self._units = units
        self._keys = keys
        self._settings = settings
        self._clock = clock

    def _issue(self, subject: str, access: Sequence[Scope], lifetime: int, now: int) -> str:
        return issue_token(
            key=self._keys.registry_key,
            cert=self._keys.registry_cert,
            issuer=self._settings.registry_issuer,
            service=self._settings.registry_service,
            subject=subject,
            access=access,
            now=now,
            lifetime=lifetime,
        )

    def token(self, caller: Authenticated, service: str, scopes: list[str]) -> dict[str, Any]:
        """Distribution's token answer for ``caller``: what the policy grants of ``scopes``.
        Every answer is audited, with what was granted and what was cut."""
        self._check(service)
        with self._units(caller) as unit:
            stagings = unit.tx.open_stagings_for(caller.name) if caller.role == "tailor" else []
            return self._grant(
                unit, caller.name, caller.role, caller.name, stagings, service, scopes
            )

    def app_token(self, app_guid: str, service: str, scopes: list[str]) -> dict[str, Any]:
        """The token answer for an app's pull credential (verified by the caller): pull on
        that app's repositories, audited like any other."""
        self._check(service)
        with self._units() as unit:
            return self._grant(unit, username_of(app_guid), "app", app_guid, [], service, scopes)

    def puller_token(self, client: str, service: str, scopes: list[str]) -> dict[str, Any]:
        """The token answer for a puller's session (verified by the caller)."""
        self._check(service)
        with self._units() as unit:
            return self._grant(unit, client, "puller", client, [], service, scopes)

    def _check(self, service: str) -> None:
        if service != self._settings.registry_service:
            raise Invalid(f"this broker issues tokens for {self._settings.registry_service!r} only")

    def _grant(
        self,
        unit: Unit,
        subject: str,
        role: str,
        client: str,
        stagings: list[StagingRow],
        service: str,
        scopes: list[str],
    ) -> dict[str, Any]:
        prefix = self._settings.registry_prefix
        granted: list[Scope] = []
        refused: list[str] = []
        for text in scopes[:MAX_SCOPES]:
            scope = parse_scope(text)
            actions = decide(role, client, scope, stagings, prefix) if scope else ()
            if scope is not None and actions:
                granted.append(Scope(scope.type, scope.name, actions))
            if scope is None or set(scope.actions) - set(actions):
                refused.append(text[:200])
        names = {a.name for a in granted}
        staging = next(
            (
                s.staging_guid
                for s in stagings
                if staging_repository(prefix, s.app_guid, s.staging_guid) in names
            ),
            None,
        )
        unit.audit(
            events.REGISTRY_TOKEN(
                client=subject,
                staging_guid=staging,
                app_guid=client if role == "app" else None,
                reason="refused" if refused else None,
                detail={
                    "service": service,
                    "granted": [str(a) for a in granted],
                    "refused": refused,
                },
            )
        )
        lifetime, now = self._settings.registry_token_seconds, int(self._clock())
        token = self._issue(subject, granted, lifetime, now)
        issued = timestamp(now)
        return {
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": issued,
            "scope": " ".join(str(a) for a in granted),  # OAuth2's: what was granted
        }

    def own_token(self, scopes: Sequence[str]) -> str:
        """The broker's own token (pruning): exactly the scopes asked, never over HTTP."""
        access = [s for s in map(parse_scope, scopes) if s is not None]
        return self._issue("broker", access, _OWN_TOKEN_SECONDS, int(self._clock()))

    def repositories_gone(self, staging_guids: list[str], at: int) -> int:
        """Record that these closed stagings' repositories are gone for good, as the prune
        walk that began at ``at`` found them (``broker.prune.Plan.gone``)."""
        with self._units() as unit:
            return unit.tx.mark_repositories_gone(staging_guids, at)

    def pruned(self, repository: str, digest: str, tags: list[str]) -> None:
        """Record that pruning deleted a manifest."""
        with self._units() as unit:
            detail = {"repository": repository, "digest": digest, "tags": tags}
            unit.audit(events.PRUNE_DELETED(client="broker", detail=detail))
