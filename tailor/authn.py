"""Authenticators for one registry: given by the caller, or read from the credential files
(Docker's config.json, containers' auth.json: :mod:`tailor.authfiles`).

An authenticator only says what it offers for one exchange (:class:`AuthConfig`);
the transport and the token source decide where that may be sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tailor import authfiles
from tailor.authfiles import AuthFile, Found
from tailor.errors import ConfigError

__all__ = [
    "ANONYMOUS",
    "Anonymous",
    "AuthConfig",
    "Authenticator",
    "Basic",
    "BrokerToken",
    "IdentityToken",
    "PlatformAssertion",
    "TokenProvider",
    "from_auth_files",
    "from_docker_config",
    "resolve",
]


@dataclass(frozen=True)
class AuthConfig:
    """What an authenticator offers for one exchange; every field is optional."""

    basic: tuple[str, str] | None = None
    """(user, password): for a Basic challenge, or a token GET (or after a refused POST)."""
    identity_token: str = ""
    """An OAuth2 refresh token, POSTed to the token realm."""
    registry_token: str = ""
    """A bearer token to use as it is: the realm is not asked."""
    label: str = ""
    """Which credentials these are, for an error message (never a secret); empty: named by
    their kind (``the basic credentials``, ``the identity token``, ``the registry token``)."""
    fixed_scopes: bool = False
    """A token got with these covers only the scopes a request names: a registry's challenge
    may not widen it (``insufficient_scope``). For credentials whose tokens go to whichever
    registry named their realm (the platform identity): such a registry gets no more than
    what the caller asked of it."""

    def __repr__(self) -> str:
        # Never let a secret reach a log through repr().
        user = self.basic[0] if self.basic else None
        kinds = [
            k
            for k, v in (
                ("identity_token", self.identity_token),
                ("registry_token", self.registry_token),
            )
            if v
        ]
        return f"AuthConfig(user={user!r}, tokens={kinds!r})"


class Authenticator(Protocol):
    """Offers credentials for one exchange with a registry."""

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        """``realm`` None: the registry sent a Basic challenge; else a Bearer token realm."""
        ...


_NOTHING = AuthConfig()


@dataclass(frozen=True)
class Anonymous:
    """No credentials at all."""

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        return _NOTHING


ANONYMOUS = Anonymous()


@dataclass(frozen=True)
class Basic:
    """A username and password: for a Basic challenge and for a token GET."""

    username: str
    password: str = field(repr=False)

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        return AuthConfig(basic=(self.username, self.password)) if self.username else _NOTHING


@dataclass(frozen=True)
class IdentityToken:
    """An OAuth2 refresh token (config.json's ``identitytoken``), POSTed to the realm.

    ``fallback`` is used for a Basic challenge, and by a realm that refuses the POST (404/405).
    """

    token: str = field(repr=False)
    fallback: Basic | None = None

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        basic = self.fallback.authorization(realm, scopes).basic if self.fallback else None
        if realm is None:
            return AuthConfig(basic=basic)
        return AuthConfig(basic=basic, identity_token=self.token)


@dataclass(frozen=True)
class PlatformAssertion:
    """The platform's own identity: a fresh client assertion as the Basic password.

    Only for a token realm that starts with ``realm`` (the broker's): an assertion is a
    credential for the broker and goes nowhere else, not even to a Basic challenge. The
    token it gets goes to the registry that named that realm, so it covers only the scopes
    the request named (``fixed_scopes``), whatever a registry's challenge asks for.
    """

    client_id: str
    sign: Callable[[], str] = field(repr=False)
    realm: str

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        if realm is not None and self.realm and realm.startswith(self.realm):
            return AuthConfig(
                basic=(self.client_id, self.sign()),
                label=f"the platform identity {self.client_id}",
                fixed_scopes=True,
            )
        return _NOTHING


@dataclass(frozen=True)
class TokenProvider:
    """Mints registry bearer tokens for the given scopes itself (the broker, for its own
    maintenance): the token realm is never asked."""

    mint: Callable[[Sequence[str]], str] = field(repr=False)

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        if realm is None:
            return _NOTHING  # a registry token answers a Bearer challenge only
        return AuthConfig(registry_token=self.mint(sorted(scopes)))


class BrokerToken:
    """The upstream pull token the broker traded the user's credentials for (the Tailor
    never holds the password): offered for a Bearer challenge only, renewed through
    ``renew`` (the broker's refresh) before it expires and after the registry refused it."""

    MARGIN = 30.0  # seconds before its end a token is renewed

    def __init__(
        self, token: str, expires_at: float, renew: Callable[[], tuple[str, float]]
    ) -> None:
        self._token = token
        self._expires_at = expires_at
        self._margin = self._margin_for(expires_at)
        self._renew = renew
        self._stale = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "BrokerToken()"

    def _margin_for(self, expires_at: float) -> float:
        """Renew ahead of the end: 30 s, or a quarter of a shorter life."""
        return min(self.MARGIN, max(0.0, expires_at - time.time()) / 4)

    def invalidate(self) -> None:
        """The registry refused the token: the next use renews it."""
        with self._lock:
            self._stale = True

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        if realm is None:
            return _NOTHING  # a pull token answers a Bearer challenge only
        with self._lock:
            if self._stale or time.time() > self._expires_at - self._margin:
                self._token, self._expires_at = self._renew()
                self._margin = self._margin_for(self._expires_at)
                self._stale = False
            token = self._token
        return AuthConfig(
            registry_token=token, label="the upstream token the broker gave", fixed_scopes=True
        )


def _authenticator(found: Found | None) -> Authenticator:
    if not found:
        return ANONYMOUS
    # A Basic pair to fall back on only when there is one: a user without a password,
    # or a password without a user, is not a credential to send.
    pair = Basic(found.username, found.password) if found.username and found.password else None
    if found.identity_token:
        return IdentityToken(found.identity_token, pair)
    return pair or ANONYMOUS


def from_auth_files(
    registry: str,
    repository: str | None = None,
    files: Sequence[AuthFile] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Authenticator:
    """What the credential files (:mod:`tailor.authfiles`; by default those of this
    process's environment, in their order) give an image of ``repository`` on ``registry``
    (normalized host[:port]), else anonymous."""
    return _authenticator(authfiles.find(registry, repository, files, warn))


def from_docker_config(registry: str, path: Path) -> Authenticator:
    """What one Docker ``config.json`` gives ``registry``, else anonymous."""
    return from_auth_files(registry, files=[AuthFile(path)])


def resolve(
    registry: str,
    username: str | None,
    password: str | None,
    repository: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Authenticator:
    """Explicit credentials win; a username without a password is an error; else what the
    credential files give an image of ``repository`` on ``registry``."""
    if username or password:
        if not (username and password):
            raise ConfigError(f"credentials for {registry} need both a username and a password")
        return Basic(username, password)
    return from_auth_files(registry, repository, warn=warn)
