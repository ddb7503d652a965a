"""Auditors' sessions for the /audit page: a single-use ticket or an assertion buys a short
session; every replica accepts it (the format is ``broker/sessions.py``)."""

from __future__ import annotations

from broker import sessions
from broker.errors import NotFound, Unauthenticated
from broker.keys import KeyMaterial
from broker.service.clients import Clients

__all__ = ["AuditorSessions"]


class AuditorSessions:
    def __init__(self, keys: KeyMaterial, clients: Clients) -> None:
        self._key = sessions.session_key(keys.fingerprint_key)
        self._clients = clients

    def _auditor(self, name: str) -> bool:
        client = self._clients.get(name)
        return client is not None and client.role == "auditor"

    def ticket(self, client: str, minutes: int) -> str:
        """A single-use link's ticket (``broker audit login``), for an auditor only."""
        if not self._auditor(client):
            raise NotFound(f"{client!r} is not a registered auditor client")
        return sessions.issue(self._key, client, "ticket", minutes * 60)

    def redeem_ticket(self, value: str | None) -> str:
        """The auditor a ticket names, spending it; Unauthenticated says why not
        (``invalid``, ``used``, ``not an auditor``)."""
        ticket = sessions.check(self._key, value, "ticket")
        if ticket is None:
            raise Unauthenticated("invalid")
        # Single use: the ticket's nonce goes where assertion ids go.
        if not self._clients.use_once(ticket.client, f"ticket:{ticket.nonce}", ticket.expires):
            raise Unauthenticated("used")
        if not self._auditor(ticket.client):
            raise Unauthenticated("not an auditor")
        return ticket.client

    def start(self, client: str, seconds: int) -> str:
        """A session cookie's value for ``client``."""
        return sessions.issue(self._key, client, "session", seconds)

    def client(self, value: str | None) -> str | None:
        """The auditor a session cookie names, while it is valid, not ended, and the
        client an auditor."""
        session = sessions.check(self._key, value, "session")
        if session is None or not self._auditor(session.client):
            return None
        if self._clients.was_used(session.client, f"session:{session.nonce}"):
            return None  # signed out: a copy of the cookie is worth nothing
        return session.client

    def end(self, value: str | None) -> None:
        """Sign out: the session is refused from now on, on every replica."""
        session = sessions.check(self._key, value, "session")
        if session is not None:
            self._clients.use_once(session.client, f"session:{session.nonce}", session.expires)
