"""The broker's app in-process (FastAPI's TestClient), with every test client registered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient
from httpx2 import Response

from broker.api.app import create_app
from broker.service import Service
from broker.settings import Settings
from broker.store import Store, open_store
from broker.store.model import ClientRow
from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.clients import Client, Clients

AUD = "http://broker.test"  # the in-process broker's public URL: every assertion's audience


@dataclass
class Api:
    http: TestClient
    clients: Clients
    service: Service
    store: Store
    """The test's own connection to the broker's database, to look behind the API."""

    def call(self, method: str, path: str, who: Client | None, **kwargs: object) -> Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if who is not None:
            headers.update(who.headers(AUD))
        return self.http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def mint(self, staging_guid: str = "stg-1", key: str | None = None, **body: object) -> Response:
        """Mint as the cc client, for the first tailor (see staging_token_body); ``key``:
        the Idempotency-Key header, for every action that takes one."""
        body = {"staging_guid": staging_guid, "tailor": self.clients.tailor.name, **body}
        payload = staging_token_body(**body)
        return self.call("POST", STAGING_TOKENS, self.clients.cc, json=payload, headers=_key(key))

    def lookup(self, token: str, who: Client | None = None) -> Response:
        who = who or self.clients.cc
        return self.call("POST", STAGING_TOKENS + "/lookup", who, json={"token": token})

    def redeem(self, token: object, who: Client | None = None, key: str | None = None) -> Response:
        """Redeem as ``who`` (the first tailor unless given)."""
        who = who or self.clients.tailor
        return self.call("POST", "/v1/redemptions", who, json={"token": token}, headers=_key(key))

    def complete(
        self,
        staging_guid: str,
        status: str,
        who: Client | None = None,
        key: str | None = None,
        **body: object,
    ) -> Response:
        """Report the staging's end as ``who`` (the first tailor unless given)."""
        who = who or self.clients.tailor
        path = f"/v1/stagings/{staging_guid}/complete"
        return self.call("POST", path, who, json={"status": status, **body}, headers=_key(key))


def _key(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Idempotency-Key": key}


def register(database_url: str, clients: Clients) -> None:
    """Register every client straight in the store (no audit events: tests count them)."""
    store = open_store(database_url)
    try:
        with store.transaction() as tx:
            for c in clients.all():
                tx.add_client(ClientRow(c.name, c.role, c.public_pem, int(time.time())))
    finally:
        store.close()


@contextmanager
def serve(settings: Settings, clients: Clients, *, sweep: bool) -> Iterator[Api]:
    """The app on ``settings``, with every client registered, running in-process."""
    app = create_app(settings, sweep=sweep)
    register(settings.database_url, clients)
    store = open_store(settings.database_url)
    try:
        with TestClient(app, raise_server_exceptions=False) as http:
            yield Api(http, clients, app.state.service, store)
    finally:
        store.close()
