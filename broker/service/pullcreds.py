"""Per-app pull credentials: what a cell puts in a DesiredLRP's image credentials.

The platform (the ``cc`` client) gets one for an app once a staging of it has
completed: a user name naming the app, ``app-<app_guid>``, and a secret,
``stpc1_<id>_<43 characters of base64url>`` (256 random bits). Any standard client
gives them to the broker's realm as it gives any registry credentials: HTTP Basic on
``GET /v1/registry-token``, or the OAuth2 ``password`` grant on ``POST``, whose
``refresh_token`` (for clients that keep an identity token) is the secret again. A
token so obtained grants ``pull``, and only on the app's staged repositories.

The store keeps SHA-256 of the secret, never the secret: 256 random bits need no slow
hash, and a cheap one keeps the realm fast under a flood of wrong guesses. The
comparison is constant-time, and an unknown id is compared against a dummy hash, so
the time taken says nothing. A failed use writes nothing (no audit flood, no lock):
it is counted (``stager_client_auth_failures_total{reason="pull_credential"}``) and
logged with why.

Issuing again rotates: the new one is live at once, and the app's older live ones end
``BROKER_PULL_CREDENTIAL_GRACE_SECONDS`` later (running instances keep pulling until
the platform has given them the new one). Revoking (the app is deleted) ends them all
at once. Each issue, rotation and revocation is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from broker.audit import events
from broker.auth import Authenticated
from broker.errors import Conflict, Unauthenticated
from broker.service.unit import Units
from broker.settings import Settings
from broker.store import Store
from broker.store.model import PullCredentialRow

__all__ = ["USER_PREFIX", "Issued", "PullCredentials", "is_pull_secret", "username_of"]

USER_PREFIX = "app-"
_SECRET = re.compile(r"stpc1_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
_DUMMY = hashlib.sha256(b"no such credential").hexdigest()


def is_pull_secret(text: str) -> bool:
    """Whether ``text`` has a pull credential's shape (not whether it is one)."""
    return text.startswith("stpc1_")


def username_of(app_guid: str) -> str:
    return USER_PREFIX + app_guid


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Refused(Unauthenticated):
    """A pull credential not accepted: one public answer, the reason for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"pull credential: {reason}", "pull_credential")


@dataclass(frozen=True)
class Issued:
    app_guid: str
    id: str
    username: str
    secret: str
    created_at: int
    replaced_until: int | None
    """When the credentials this one replaced stop working (None: it replaced none)."""

    def __repr__(self) -> str:  # the secret never reaches a log through repr()
        return f"Issued(app_guid={self.app_guid!r}, id={self.id!r})"


class PullCredentials:
    def __init__(
        self, store: Store, units: Units, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._units = units
        self._settings = settings
        self._clock = clock

    def issue(self, caller: Authenticated, app_guid: str) -> Issued:
        """A new credential for the app; the app's older live ones end after the grace."""
        now = int(self._clock())
        credential_id = secrets.token_hex(8)
        secret = f"stpc1_{credential_id}_{secrets.token_urlsafe(32)}"
        until = now + self._settings.pull_credential_grace_seconds
        bad: Conflict | None = None
        with self._units(caller) as unit:
            if not unit.tx.app_has_completed_staging(app_guid):
                bad = Conflict(f"app {app_guid} has no completed staging: nothing to pull")
            else:
                replaced = unit.tx.expire_pull_credentials(app_guid, until)
                unit.tx.insert_pull_credential(
                    PullCredentialRow(
                        credential_id, app_guid, _digest(secret), now, caller.name, None, None
                    )
                )
                detail: dict[str, object] = {"id": credential_id}
                if replaced:
                    detail.update(replaced=replaced, replaced_until=until)
                unit.audit(
                    events.PULL_CREDENTIAL_ISSUED(
                        client=caller.name, app_guid=app_guid, detail=detail
                    )
                )
        if bad is not None:
            raise bad
        return Issued(
            app_guid,
            credential_id,
            username_of(app_guid),
            secret,
            now,
            until if replaced else None,
        )

    def revoke(self, caller: Authenticated, app_guid: str) -> int:
        """End every credential of the app now; how many were live."""
        with self._units(caller) as unit:
            ids = unit.tx.revoke_pull_credentials(app_guid, int(self._clock()))
            if ids:
                unit.audit(
                    events.PULL_CREDENTIAL_REVOKED(
                        client=caller.name, app_guid=app_guid, detail={"revoked": ids}
                    )
                )
        return len(ids)

    def of(self, app_guid: str) -> list[PullCredentialRow]:
        with self._store.transaction(write=False) as tx:
            return tx.pull_credentials_of(app_guid)

    def verify(self, secret: str, username: str | None = None) -> str:
        """The app whose live credential ``secret`` is (``username``, when given, must name
        it); else :class:`Refused`. Constant-time in the secret; writes nothing."""
        match = _SECRET.fullmatch(secret)
        row = None
        if match:
            with self._store.transaction(write=False) as tx:
                row = tx.get_pull_credential(match.group(1))
        same = hmac.compare_digest(_digest(secret), row.secret_hash if row else _DUMMY)
        if row is None or not same:
            raise Refused("unknown credential or wrong secret")
        if row.revoked_at is not None:
            raise Refused(f"{row.id} revoked")
        if row.expires_at is not None and row.expires_at <= int(self._clock()):
            raise Refused(f"{row.id} rotated out")
        if username is not None and username != username_of(row.app_guid):
            raise Refused(f"{row.id} presented for another user name")
        return row.app_guid
