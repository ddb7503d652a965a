"""The bearer-token dance of Distribution's token spec: fetch, cache per scope, refresh.

What to present comes from the authenticator, asked on a cache miss: GET with
Basic credentials (or none, for anonymous pulls); OAuth2 POST with a refresh token
when we hold one (an identity token, or one the token server handed back); or a
registry token the caller minted itself, used as is and never cached. Tokens are
cached per (realm, service, scopes) until shortly before they expire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from tailor.authn import AuthConfig, Authenticator
from tailor.challenge import Challenge
from tailor.errors import AuthError, Unauthorized

__all__ = ["MAX_TOKEN_RESPONSE", "Grant", "TokenSource", "check_realm"]

# A token response is a few KiB; a larger one is a broken or hostile server.
MAX_TOKEN_RESPONSE = 64 * 1024
_MIN_LIFETIME = 60
_CLIENT_ID = "tailor"

Send = Callable[..., requests.Response]


def check_realm(realm: str, registry: str, insecure: Callable[[str], bool]) -> str:
    """Refuse a realm we must not send credentials to; return it unchanged when fine."""
    try:
        parts = urlsplit(realm)
        port = parts.port
    except ValueError:
        raise AuthError(f"registry {registry} names an unreadable token realm") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AuthError(f"registry {registry} names a token realm that is not an http(s) URL")
    if parts.username or parts.password:
        raise AuthError(f"registry {registry} names a token realm with credentials in it")
    if parts.scheme == "http":
        # The realm receives the user's password (the token spec's GET with Basic): plain
        # HTTP only on the registry's own host, and only where the operator marked it.
        netloc = parts.hostname + (f":{port}" if port else "")
        if parts.hostname.lower() != (urlsplit(f"//{registry}").hostname or "").lower():
            raise AuthError(
                f"registry {registry} names a plain-HTTP token realm on another host "
                f"({netloc}); a realm receives the password, so only https"
            )
        if not (insecure(netloc) or insecure(parts.hostname)):
            raise AuthError(
                f"registry {registry} names a plain-HTTP token realm {netloc}; "
                "mark it with --insecure-registry to allow it"
            )
    return realm


@dataclass(frozen=True)
class Grant:
    """A bearer token and how it was got: ``sent`` is what was presented to the realm (None:
    nothing, an anonymous token), ``fixed_scopes`` that a challenge may not widen it."""

    token: str = field(repr=False)
    sent: str | None
    fixed_scopes: bool = False


@dataclass
class _Cached:
    grant: Grant
    expires: float


def _presented(config: AuthConfig, refresh: str) -> str | None:
    """Which credentials a token request presented, for an error message."""
    if refresh:
        if refresh != config.identity_token:
            return "the refresh token the token server issued"
        return config.label or "the identity token"
    if config.basic:
        return config.label or "the basic credentials"
    return None


class TokenSource:
    """Bearer tokens for one registry and one authenticator."""

    def __init__(
        self,
        registry: str,
        auth: Authenticator,
        send: Send,
        insecure: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
        *,
        hint: str = "",
    ) -> None:
        self._registry = registry
        self._hint = hint  # where credentials could come from, said when none were sent
        self._auth = auth
        self._send = send
        self._insecure = insecure
        self._clock = clock
        self._refresh_token = ""  # one the token server handed back: it wins from then on
        self._cache: dict[tuple[str, str, frozenset[str]], _Cached] = {}
        self._lock = threading.Lock()

    def token(self, challenge: Challenge, scopes: Iterable[str], *, fresh: bool = False) -> str:
        return self.grant(challenge, scopes, fresh=fresh).token

    def grant(
        self, challenge: Challenge, scopes: Iterable[str], *, fresh: bool = False, what: str = ""
    ) -> Grant:
        """A token for ``scopes`` (cached unless ``fresh``); ``what`` names the request it is
        for in an error: a realm's refusal is an :class:`Unauthorized` saying what was sent."""
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, frozenset(scopes))
        with self._lock:
            cached = self._cache.get(key)
            if cached and not fresh and cached.expires > self._clock():
                return cached.grant
        invalidate = getattr(self._auth, "invalidate", None)
        if fresh and callable(invalidate):
            invalidate()  # a token the registry refused: its giver renews it
        config = self._auth.authorization(realm, sorted(key[2]))
        if config.registry_token:
            # Minted by the caller itself: no realm is contacted, so none is checked.
            sent = config.label or "the registry token"
            return Grant(config.registry_token, sent, config.fixed_scopes)
        if not realm:
            raise AuthError(f"registry {self._registry} sent a bearer challenge without a realm")
        check_realm(realm, self._registry, self._insecure)
        what = what or "a token for " + " ".join(sorted(key[2]))
        grant, lifetime = self._fetch(realm, service, sorted(key[2]), config, what)
        # Refresh a little early so a token never expires mid-request.
        margin = min(30.0, lifetime / 10)
        with self._lock:
            self._cache[key] = _Cached(grant, self._clock() + lifetime - margin)
        return grant

    def _fetch(
        self, realm: str, service: str, scopes: list[str], config: AuthConfig, what: str
    ) -> tuple[Grant, float]:
        refresh = self._refresh_token or config.identity_token
        if refresh:
            response = self._oauth2(realm, service, scopes, refresh)
            if response.status_code in (404, 405) and config.basic:
                response.close()
                refresh = ""
                response = self._basic_get(realm, service, scopes, config)
        else:
            response = self._basic_get(realm, service, scopes, config)
        sent = _presented(config, refresh)
        token, lifetime = self._read(response, realm, sent, what)
        return Grant(token, sent, config.fixed_scopes), lifetime

    def _oauth2(
        self, realm: str, service: str, scopes: list[str], refresh: str
    ) -> requests.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": service,
            "client_id": _CLIENT_ID,
            "scope": " ".join(scopes),
        }
        return self._send("POST", realm, data=form, stream=True, allow_redirects=False)

    def _basic_get(
        self, realm: str, service: str, scopes: list[str], config: AuthConfig
    ) -> requests.Response:
        params: list[tuple[str, str]] = [("service", service)] if service else []
        params += [("scope", s) for s in scopes]
        return self._send(
            "GET", realm, params=params, auth=config.basic, stream=True, allow_redirects=False
        )

    def _read(
        self, response: requests.Response, realm: str, sent: str | None, what: str
    ) -> tuple[str, float]:
        host = urlsplit(realm).netloc
        with response:
            if response.status_code in (401, 403):
                raise Unauthorized(
                    response.status_code,
                    what,
                    by=f"token server {host}",
                    sent=sent,
                    hint=self._hint,
                )
            if response.status_code != 200:
                raise AuthError(f"token server {host} answered HTTP {response.status_code}")
            body = b""
            for chunk in response.iter_content(16384):
                body += chunk
                if len(body) > MAX_TOKEN_RESPONSE:
                    raise AuthError(f"token server {host} sent an oversized token response")
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            raise AuthError(f"token server {host} sent an unreadable token response") from None
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"token server {host} sent no token")
        refresh = data.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._refresh_token = refresh
        expires_in = data.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else _MIN_LIFETIME
        return token, max(lifetime, _MIN_LIFETIME)
