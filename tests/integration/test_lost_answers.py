"""Answers lost between a real ``broker serve`` and its callers: the Tailor's and the push
client's broker client ask again, with a fresh assertion and the same Idempotency-Key, and
get the first answer; the broker acts once and audits each repeat.

The fault sits where a network or a balancer would: a little proxy on loopback passes
each request to the broker, and for the requests it is told to, drops the broker's
answer (the connection closes with no answer, as when a replica dies after its commit)
or answers 502 in its place (a balancer whose replica went away mid-answer).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from tailor.assertion import ClientKey
from tailor.broker_client import BrokerClient, BrokerError
from tests.support.brokerproc import (
    BrokerProcess,
    broker_cli,
    broker_env,
    provision,
    settled,
    start_broker,
)
from tests.support.clients import Client, Clients
from tests.support.credentials import PASSWORD
from tests.support.httpserver import reply, serve

pytestmark = pytest.mark.slow

DIGEST = "sha256:" + "ab" * 32


@dataclass
class Faults:
    backend: str = ""
    plan: dict[str, list[str]] = field(default_factory=dict)
    """Path suffix -> what to do with its next answers: "drop" or "502"."""
    reached: Counter[str] = field(default_factory=Counter)
    keys: dict[str, list[str | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        answer = requests.request(
            h.command, self.backend + h.path, data=body, headers=headers, timeout=30
        )
        with self.lock:
            suffix = next((s for s in self.plan if h.path.endswith(s)), None)
            self.reached[h.path] += 1
            self.keys.setdefault(h.path, []).append(h.headers.get("Idempotency-Key"))
            fault = self.plan[suffix].pop(0) if suffix and self.plan[suffix] else None
        if fault == "drop":
            h.close_connection = True  # the broker acted; its answer goes nowhere
            return
        if fault == "502":
            reply(h, 502, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})
            return
        kept = {"Content-Type", "Cache-Control", "Retry-After"}
        reply(
            h,
            answer.status_code,
            answer.content,
            {k: answer.headers[k] for k in kept & set(answer.headers)},
        )


@dataclass
class Setup:
    faults: Faults
    broker: BrokerProcess
    url: str
    env: dict[str, str]

    def client(self, who: Client) -> BrokerClient:
        return BrokerClient(self.url, ClientKey(who.name, who.key))

    def events(self) -> list[tuple[str, str | None]]:
        settled(self.env["BROKER_DATABASE_URL"])
        listed = broker_cli(self.env, "audit", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):
            rows = rows[0]
        return [(r["event"], (r.get("detail") or {}).get("action")) for r in rows]


@pytest.fixture
def setup(tmp_path: Path, clients: Clients) -> Iterator[Setup]:
    faults = Faults()
    with serve(faults.handle) as address:
        url = f"http://{address}"
        env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", url)
        provision(env, tmp_path, clients.all())
        broker = start_broker(env, tmp_path / "broker.log")
        faults.backend = broker.url
        try:
            yield Setup(faults, broker, url, env)
        finally:
            broker.stop()


def mint_body(clients: Clients, staging_guid: str) -> dict[str, object]:
    return {
        "app_guid": "app-1",
        "staging_guid": staging_guid,
        "image": "registry.example.com/team/app:1.0",
        "username": "alice",
        "password": PASSWORD,
        "tailor": clients.tailor.name,
    }


def test_lost_answers_are_asked_again_and_acted_on_once(setup: Setup, clients: Clients) -> None:
    f = setup.faults
    f.plan = {
        "/v1/staging-tokens": ["drop"],
        "/v1/redemptions": ["drop", "502"],
        "/complete": ["drop"],
    }
    cc, tailor = setup.client(clients.cc), setup.client(clients.tailor)
    minted = cc.mint(**mint_body(clients, "stg-1"))
    got = tailor.redeem(str(minted["token"]))
    assert (got.username, got.password, got.staging_guid) == ("alice", PASSWORD, "stg-1")
    tailor.complete("stg-1", succeeded=True, result={"docker_image": f"x@{DIGEST}"})
    assert all(not plan for plan in f.plan.values())  # every fault was served

    # Each lost answer was a request the broker received and acted on; each action's
    # tries carried one key, and no two actions shared one.
    assert f.reached["/v1/staging-tokens"] == 2 and f.reached["/v1/redemptions"] == 3
    keys = {path: set(sent) for path, sent in f.keys.items()}
    assert all(len(sent) == 1 and None not in sent for sent in keys.values()), keys
    assert len(set().union(*keys.values())) == 3

    assert setup.events() == [
        *[("client.added", None)] * len(clients.all()),
        ("token.issued", None),
        ("request.repeated", "mint"),
        # Each redemption gave the password (the broker cannot trade it: its registry does
        # not resolve), and says so.
        ("token.redeemed", None),
        ("credentials.released", None),
        ("request.repeated", "redeem"),
        ("credentials.released", None),
        ("request.repeated", "redeem"),
        ("credentials.released", None),
        ("staging.completed", None),
        ("credentials.purged", None),
        ("request.repeated", "complete"),
    ]
    assert PASSWORD not in setup.broker.log.read_text()


def test_a_broker_that_never_answers_is_given_up_on_in_one_line(
    setup: Setup, clients: Clients
) -> None:
    f = setup.faults
    f.plan = {"/v1/staging-tokens": ["drop"] * 10}
    with pytest.raises(BrokerError) as info:
        setup.client(clients.cc).mint(**mint_body(clients, "stg-2"))
    assert str(info.value) == (
        "cannot reach the broker for the staging token: the connection closed before an"
        " answer (5 attempts)"
    )
    assert f.reached["/v1/staging-tokens"] == 5
    # The broker minted once; every try after the first was the same mint repeated.
    events = setup.events()
    assert events.count(("token.issued", None)) == 1
    assert events.count(("request.repeated", "mint")) == 4
