"""A live broker on PostgreSQL whose connection drops around a COMMIT (tests/support/pgproxy.py):
it says "nothing was done" only when that is true."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from broker.keys import init_keys
from broker.store import open_store
from tailor.assertion import ClientKey
from tailor.broker_client import BrokerClient
from tests.support.broker_api import STAGING_TOKENS, minted_token
from tests.support.brokerapp import register
from tests.support.brokerproc import BrokerProcess, broker_env, start_broker
from tests.support.clients import Clients
from tests.support.credentials import PASSWORD
from tests.support.pgproxy import PgProxy, pg_proxy

pytestmark = pytest.mark.slow

PUBLIC = "https://broker.platform.internal"
PROBLEM = "application/problem+json"
REDEEMING = "UPDATE stagings SET state='redeemed'"


class PublicAudience(ClientKey):
    """Assertions for the broker's public URL, whatever address the client dials."""

    def assertion(self, audience: str, now: float | None = None) -> str:
        return super().assertion(PUBLIC, now)


@dataclass
class Live:
    broker: BrokerProcess
    proxy: PgProxy
    clients: Clients

    def mint(self, guid: str) -> str:
        return minted_token(self.broker.url, self.clients.cc, audience=PUBLIC, staging_guid=guid)

    def redeem(self, token: str, headers: dict[str, str] | None = None) -> requests.Response:
        headers = headers or self.clients.tailor.headers(PUBLIC)
        return self.broker.post("/v1/redemptions", headers, {"token": token})

    def lookup(self, token: str) -> requests.Response:
        headers = self.clients.cc.headers(PUBLIC)  # a fresh assertion
        return self.broker.post(STAGING_TOKENS + "/lookup", headers, {"token": token})

    def audit(self, path: str, **params: str) -> requests.Response:
        headers = self.clients.auditor.headers(PUBLIC)
        return requests.get(self.broker.url + path, headers=headers, params=params, timeout=60)

    def error_lines(self) -> list[str]:
        records = [json.loads(line) for line in self.broker.log.read_text().splitlines()]
        return [r["msg"] for r in records if r["level"] in ("error", "critical")]


@pytest.fixture
def live(tmp_path: Path, pg_schema_url: str, clients: Clients) -> Iterator[Live]:
    """One ``broker serve`` whose every database connection goes through the proxy."""
    init_keys(tmp_path / "keys")
    store = open_store(pg_schema_url)
    try:
        store.migrate()
    finally:
        store.close()
    register(pg_schema_url, clients)
    with pg_proxy(pg_schema_url) as proxy:
        env = broker_env(tmp_path, proxy.url, PUBLIC)
        broker = start_broker(env, tmp_path / "broker.log")
        try:
            yield Live(broker, proxy, clients)
        finally:
            broker.stop()


def test_a_redemption_whose_commit_answer_is_lost_is_not_called_undone(live: Live) -> None:
    """PostgreSQL commits the redemption and the broker loses its answer: the token is
    spent. The broker said 503 "nothing was done", which sent the tailor away with nothing
    and its retry to a 400; it must say that the outcome is unknown and how to find out."""
    token = live.mint("stg-lost")
    live.proxy.arm(REDEEMING)
    key = {"Idempotency-Key": secrets.token_urlsafe(24)}
    headers = {**live.clients.tailor.headers(PUBLIC), **key}
    r = live.redeem(token, headers)
    assert live.proxy.withheld == [["C COMMIT"]]  # PostgreSQL did commit it
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
    detail = r.json()["detail"]
    assert "nothing was done" not in detail
    assert "outcome is unknown" in detail and "may have been done" in detail
    assert "/v1/staging-tokens/lookup" in detail and "Idempotency-Key" in detail
    assert "store failure while committing; the action may have been done" in live.error_lines()

    # The way to find out: a lookup (a fresh assertion) says the token was redeemed.
    found = live.lookup(token)
    assert found.status_code == 200, found.text
    assert found.json()["redeemed"] is True and found.json()["state"] == "redeemed"
    # The assertion was spent with the redemption, and not again after the 503.
    assert live.redeem(token, headers).status_code == 401
    assert live.redeem(token).status_code == 400  # spent: why the answer must not lie
    # The cure: the same key with a fresh assertion gets the first answer again.
    again = live.redeem(token, {**live.clients.tailor.headers(PUBLIC), **key})
    assert again.status_code == 200, again.text
    assert again.json()["password"] == PASSWORD and again.json()["staging_guid"] == "stg-lost"
    repeated = live.audit("/v1/audit", staging="stg-lost", event="request.repeated")
    assert [e["detail"] for e in repeated.json()["events"]] == [{"action": "redeem"}]
    redeemed = live.audit("/v1/audit", staging="stg-lost", event="token.redeemed")
    assert redeemed.status_code == 200 and len(redeemed.json()["events"]) == 1
    verified = live.audit("/v1/audit/verify")
    assert verified.status_code == 200 and verified.json()["intact"] is True, verified.text

    # The pool replaced the dropped connection: the broker goes on.
    after = live.mint("stg-after")
    r = live.redeem(after)
    assert r.status_code == 200 and r.json()["password"] == PASSWORD


def test_the_tailor_gets_its_credentials_through_a_lost_commit_answer(live: Live) -> None:
    """The Tailor's broker client sends its redemption with a key and asks again after the
    503: the staging goes on as if nothing had happened, and the broker redeemed once."""
    token = live.mint("stg-tailor")
    live.proxy.arm(REDEEMING)
    tailor = live.clients.tailor
    client = BrokerClient(live.broker.url, PublicAudience(tailor.name, tailor.key))
    got = client.redeem(token)
    assert live.proxy.withheld == [["C COMMIT"]]
    assert (got.staging_guid, got.password) == ("stg-tailor", PASSWORD)
    events = live.audit("/v1/audit", staging="stg-tailor").json()["events"]
    assert [e["event"] for e in events] == [
        "token.issued",
        "token.redeemed",
        "credentials.released",  # the broker cannot trade the password (no such registry)
        "request.repeated",
        "credentials.released",
    ]


def test_a_connection_lost_before_commit_is_nothing_done(live: Live) -> None:
    """Dropped before COMMIT was sent (on the redeeming statement itself): PostgreSQL
    rolls back, so "nothing was done" is true, and a retry redeems the token."""
    token = live.mint("stg-rolled-back")
    live.proxy.arm(REDEEMING, cut="statement")
    r = live.redeem(token)
    assert live.proxy.cut.is_set() and live.proxy.withheld == []
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
    assert "nothing was done" in r.json()["detail"]
    assert "store failure; action not taken" in live.error_lines()
    found = live.lookup(token)
    assert found.status_code == 200 and found.json()["redeemed"] is False
    assert found.json()["state"] == "open"
    again = live.redeem(token)  # a fresh assertion: the one of the 503 was not spent
    assert again.status_code == 200 and again.json()["password"] == PASSWORD
    assert live.audit("/v1/audit/verify").json()["intact"] is True
