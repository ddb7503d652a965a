"""The internal registry's token server: who may do what to which repository. Policy is
pure (``decide``); the token is an ES256 JWT per Distribution's token spec (``issue``).

Isolation policy, for repositories named ``<prefix>/<app_guid>/<staging_guid>``:
- a ``tailor`` gets pull+push on the repository of each staging it holds open
  (minted for it, not completed, failed, cancelled or expired), and pull on that
  app's other repositories (its earlier stagings: the mount sources);
- a ``puller`` (the cells) gets pull on every repository under the prefix;
- an ``app`` (a per-app pull credential, ``broker/service/pullcreds.py``; the client is
  the app guid) gets pull on that app's repositories, and nothing else;
- nobody gets ``delete`` or ``registry:catalog:*`` here: those are the broker's
  own (pruning), minted internally, never over HTTP;
- everything else is refused. Grants are intersected with what was asked.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.store.model import OPEN_STATES, StagingRow
from tailor.jose import compact_jws
from tailor.naming import app_namespace, prefix_namespace, staging_repository
from tailor.reference import valid_repository

__all__ = ["MAX_SCOPES", "Scope", "decide", "issue_token", "parse_scope"]

MAX_SCOPES = 16


@dataclass(frozen=True)
class Scope:
    """Actions on a resource: asked for (a scope) or granted (a token's access claim)."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scope(text: str) -> Scope | None:
    """``repository:team/app:pull,push`` (the name may not hold ':' but may hold '/')."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name and actions) or len(text) > 512:
        return None
    return Scope(kind, name, tuple(a for a in actions.split(",") if a))


def decide(
    role: str, client: str, scope: Scope, stagings: Iterable[StagingRow], prefix: str
) -> tuple[str, ...]:
    """The actions of ``scope`` this client may have (possibly none)."""
    if scope.type != "repository":
        return ()
    wanted = set(scope.actions)
    name = scope.name.lower()
    if not valid_repository(name):
        return ()  # "a/../b", "a//b": not a name; never left to the registry to refuse
    if role == "puller":
        return tuple(sorted(wanted & {"pull"})) if name.startswith(prefix_namespace(prefix)) else ()
    if role == "app":
        return (
            tuple(sorted(wanted & {"pull"}))
            if name.startswith(app_namespace(prefix, client))
            else ()
        )
    if role != "tailor":
        return ()
    allowed: set[str] = set()
    for s in stagings:
        if s.tailor != client or s.state not in OPEN_STATES:
            continue
        if name == staging_repository(prefix, s.app_guid, s.staging_guid):
            allowed |= {"pull", "push"}
        elif name.startswith(app_namespace(prefix, s.app_guid)):
            allowed |= {"pull"}  # the same app's earlier stagings: mount sources
    return tuple(sorted(wanted & allowed))


def issue_token(
    *,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    issuer: str,
    service: str,
    subject: str,
    access: Sequence[Scope],
    now: int,
    lifetime: int,
) -> str:
    """An ES256 JWT Distribution 2.8 accepts: the certificate rides in ``x5c``."""
    der = cert.public_bytes(serialization.Encoding.DER)
    header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": now + lifetime,
        "nbf": now - 5,
        "iat": now,
        "jti": secrets.token_hex(12),
        "access": [a.claim() for a in access],
    }
    return compact_jws(header, claims, key)
