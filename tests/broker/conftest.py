"""Broker fixtures: keys, stores (SQLite and a real PostgreSQL), an app and registered clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from broker.api.app import create_app
from broker.keys import init_keys
from broker.service import Service
from broker.settings import Settings
from broker.store import Store, open_store
from broker.store.model import ClientRow
from tests.support.clients import Client, new_client

ROOT = Path(__file__).resolve().parents[2]
AUD = "http://broker.test"
PASSWORD = "registry-pw-Zq81-never-logged"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.sqlite'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    init_keys(path)
    return path


@dataclass
class Clients:
    cc: Client
    tailor: Client
    tailor2: Client
    auditor: Client
    puller: Client

    def all(self) -> list[Client]:
        return [self.cc, self.tailor, self.tailor2, self.auditor, self.puller]


@pytest.fixture(scope="session")
def clients() -> Clients:
    return Clients(
        cc=new_client("cloud-controller", "cc"),
        tailor=new_client("tailor-1", "tailor", "p256"),
        tailor2=new_client("tailor-2", "tailor"),
        auditor=new_client("auditor", "auditor"),
        puller=new_client("cell-7", "puller", "p256"),
    )


def register(database_url: str, clients: Clients) -> None:
    """Register every client straight in the store (no audit events: tests count them)."""
    store = open_store(database_url)
    try:
        with store.transaction() as tx:
            for c in clients.all():
                tx.add_client(ClientRow(c.name, c.role, c.public_pem, int(time.time())))
    finally:
        store.close()


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'broker.sqlite'}",
        keys_dir=keys_dir,
        public_url=AUD,
    )


@dataclass
class Api:
    http: TestClient
    clients: Clients
    service: Service
    store: Store
    """The test's own connection to the broker's database, to look behind the API."""

    def call(self, method: str, path: str, who: Client | None, **kwargs: object):
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if who is not None:
            headers.update(who.headers(AUD))
        return self.http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def mint(self, staging_guid: str = "stg-1", **body: object):
        payload: dict[str, object] = {
            "app_guid": "app-1",
            "staging_guid": staging_guid,
            "image": "registry.example.com/team/app:1.0",
            "username": "alice",
            "password": PASSWORD,
            "tailor": self.clients.tailor.name,
        }
        payload.update(body)
        return self.call("POST", "/v1/staging-tokens", self.clients.cc, json=payload)


@pytest.fixture
def api(settings: Settings, clients: Clients) -> Iterator[Api]:
    with serve(settings, clients, sweep=False) as api:
        yield api


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
