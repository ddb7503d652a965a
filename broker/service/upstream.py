"""The upstream exchange as the broker uses it: the user's password traded for a pull token.

``tailor/exchange.py`` does the trade (through the outbound guard, one deadline); this
decides what each outcome means for a redemption or a refresh, by the settings:

- a ``Token``: given to the Tailor instead of the password (``credentials.exchanged``);
- ``Anonymous``: the repository is public, nothing is given;
- ``BasicOnly`` (no token to trade) and, under the default, ``Unreachable`` and
  ``PolicyRefused`` (the broker cannot make the trade; the Tailor may still reach the
  registry): the password is released as before, audited with the reason
  (``credentials.released``); with ``BROKER_RELEASE_PASSWORDS=never`` they are refused;
- ``Refused``: the registry said no to these credentials for this repository: the
  redemption is refused with the registry's own words (nothing is spent).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

from broker.errors import Invalid, UpstreamUnreachable
from broker.settings import Settings
from tailor.exchange import (
    Anonymous,
    BasicOnly,
    Outcome,
    PolicyRefused,
    Refused,
    Token,
    Unreachable,
    exchange,
)
from tailor.reference import parse_reference
from tailor.transport import InsecureHosts

__all__ = ["Decision", "Upstream", "UpstreamRefused", "UpstreamToken"]


class UpstreamRefused(Invalid):
    """The upstream registry refused the user's credentials for this image (422)."""


@dataclass(frozen=True)
class UpstreamToken:
    token: str = field(repr=False)
    expires_at: int
    realm: str
    service: str
    scope: str


@dataclass(frozen=True)
class Decision:
    """What a redemption gives the Tailor: a token, the password, or nothing."""

    give: Literal["token", "password", "nothing"]
    token: UpstreamToken | None = None
    reason: str = ""
    """Why the password is released (audited), or why nothing is needed."""
    lifetime: int = 0


def _epoch(when: datetime.datetime) -> int:
    return int(when.timestamp())


def _given(got: Token) -> Decision:
    token = UpstreamToken(got.token, _epoch(got.expires_at), got.realm, got.service, got.scope)
    return Decision("token", token, lifetime=got.expires_in)


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._policy = settings.outbound_policy()
        self._insecure = InsecureHosts(settings.insecure_hosts())

    def outcome(
        self, image: str, username: str, password: str, *, deadline: float | None = None
    ) -> Outcome:
        return exchange(
            parse_reference(image),
            username,
            password,
            policy=self._policy,
            insecure=self._insecure,
            deadline=deadline or self._settings.upstream_exchange_seconds,
        )

    def decide(self, image: str, username: str | None, password: str | None) -> Decision:
        """Trade the credentials of a staging for what its Tailor should get."""
        if username is None or password is None:
            return Decision("nothing", reason="a public image: no credentials were given")
        got = self.outcome(image, username, password)
        if isinstance(got, Token):
            return _given(got)
        if isinstance(got, Anonymous):
            return Decision("nothing", reason="the repository is public")
        if isinstance(got, Refused):
            raise UpstreamRefused(f"the upstream registry refused the staging: {got}")
        reason = (
            f"basic-only registry ({got.realm or 'no realm'})"
            if isinstance(got, BasicOnly)
            else f"no token could be had: {got}"
        )
        if self._settings.release_passwords == "never":
            if isinstance(got, Unreachable):
                raise UpstreamUnreachable(f"the broker cannot reach the upstream registry: {got}")
            if isinstance(got, PolicyRefused):
                # The broker's own outbound policy: asking again will not change it (as at
                # mint, a 422 rather than a 503 a client would retry).
                raise UpstreamRefused(f"the broker may not reach the upstream registry: {got}")
            raise UpstreamRefused(
                "the upstream registry only does Basic auth, and this broker releases no"
                " passwords (BROKER_RELEASE_PASSWORDS=never)"
            )
        return Decision("password", reason=reason)

    def check(self, image: str, username: str, password: str) -> str:
        """At mint: can these credentials pull the image? A refusal is raised (the push
        fails at once with the registry's own words); an unreachable registry is not one
        (it may answer by staging time). Returns what was found, for the audit log."""
        got = self.outcome(
            image, username, password, deadline=self._settings.upstream_check_seconds
        )
        never = self._settings.release_passwords == "never"
        if isinstance(got, Refused):
            raise UpstreamRefused(f"the upstream registry refused the credentials: {got}")
        if isinstance(got, BasicOnly) and never:
            raise UpstreamRefused(
                "the upstream registry only does Basic auth, and this broker releases no"
                " passwords (BROKER_RELEASE_PASSWORDS=never)"
            )
        if isinstance(got, PolicyRefused) and never:
            raise UpstreamRefused(f"the broker may not reach the upstream registry: {got}")
        if isinstance(got, Token):
            return "token"
        if isinstance(got, Anonymous):
            return "public"
        if isinstance(got, BasicOnly):
            return "basic-only"
        return f"not checked: {got}"[:300]

    def refresh(self, image: str, username: str | None, password: str | None) -> Decision:
        """A fresh token for an open staging: never the password."""
        if username is None or password is None:
            raise Invalid("a public image's staging has no upstream token to refresh")
        got = self.outcome(image, username, password)
        if isinstance(got, Token):
            return _given(got)
        if isinstance(got, Refused):
            raise UpstreamRefused(f"the upstream registry refused the refresh: {got}")
        if isinstance(got, PolicyRefused):
            raise UpstreamRefused(f"the broker may not reach the upstream registry: {got}")
        if isinstance(got, Unreachable):
            raise UpstreamUnreachable(f"the broker cannot reach the upstream registry: {got}")
        raise Invalid("the upstream registry gives no token to refresh (Basic auth, or public)")
