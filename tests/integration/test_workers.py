"""``broker serve --workers N``: several processes on one port and one store, on SQLite and
PostgreSQL, with redemption and the assertion replay check still exactly-once."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import requests

from broker.store import open_store
from tests.support.broker_api import STAGING_TOKENS, minted_token
from tests.support.brokerproc import (
    BrokerProcess,
    broker_cli,
    broker_env,
    provision,
    settled,
    start_broker,
)
from tests.support.clients import Clients
from tests.support.concurrency import together

pytestmark = pytest.mark.slow

PUBLIC = "https://broker.workers.internal"
RACERS = 24
WAVES = 6  # a wave that reached one worker only is tried again, with a new token


def served_by(log: Path, since: int, path: str, count: int) -> set[int]:
    """The pids of the workers whose access-log lines show ``count`` requests to ``path``
    after byte ``since`` of ``log`` (they are written as the answers go out: wait a little)."""
    deadline = time.monotonic() + 10
    while True:
        with log.open("rb") as f:
            f.seek(since)
            lines = [json.loads(x) for x in f.read().splitlines() if x.startswith(b"{")]
        hits = [x["pid"] for x in lines if x["logger"] == "uvicorn.access" and path in x["msg"]]
        if len(hits) >= count or time.monotonic() > deadline:
            assert len(hits) == count, f"{len(hits)} access-log lines for {path}, not {count}"
            return set(hits)
        time.sleep(0.05)


def race(b: BrokerProcess, path: str, calls: Sequence[tuple[dict[str, str], object]]) -> list[int]:
    """POST each (headers, body) at once, each on a connection of its own: status codes."""

    def one(headers: dict[str, str], body: object) -> Callable[[], int]:
        def post() -> int:
            return requests.post(b.url + path, headers=headers, json=body, timeout=60).status_code

        return post

    return together([one(h, body) for h, body in calls])


def two_workers(b: BrokerProcess) -> list[int]:
    deadline = time.monotonic() + 30
    while len(pids := b.workers()) != 2:
        assert time.monotonic() < deadline, f"workers: {pids}"
        time.sleep(0.1)
    return pids


def test_two_workers_redeem_once_and_take_an_assertion_once(
    tmp_path: Path, clients: Clients, database_url: str
) -> None:
    env = broker_env(tmp_path, database_url, PUBLIC)
    provision(env, tmp_path, clients.all())
    log = tmp_path / "broker.log"
    b = start_broker(env, log, workers=2)
    redeemed: list[str] = []
    try:
        pids = set(two_workers(b))
        spanned = {"redeem": False, "replay": False}
        for wave in range(WAVES):
            guid = f"stg-wave-{wave}"
            token = minted_token(b.url, clients.cc, audience=PUBLIC, staging_guid=guid)
            calls = [(clients.tailor.headers(PUBLIC), {"token": token}) for _ in range(RACERS)]
            since = log.stat().st_size
            codes = race(b, "/v1/redemptions", calls)
            assert codes.count(200) == 1, codes
            assert all(400 <= c < 500 for c in codes if c != 200), codes  # refused, not failed
            redeemed.append(guid)
            workers = served_by(log, since, "/v1/redemptions", RACERS)
            assert workers <= pids
            spanned["redeem"] |= workers == pids

            # One assertion, sent by every racer: one of them is served, the rest replays.
            same = clients.cc.headers(PUBLIC)
            since = log.stat().st_size
            codes = race(b, STAGING_TOKENS + "/lookup", [(same, {"token": token})] * RACERS)
            assert codes.count(200) == 1, codes
            assert codes.count(401) == RACERS - 1, codes
            workers = served_by(log, since, STAGING_TOKENS + "/lookup", RACERS)
            spanned["replay"] |= workers == pids
            if all(spanned.values()):
                break
        assert all(spanned.values()), f"every wave reached one worker only: {spanned}"
    finally:
        b.stop()
    # The log agrees: one redemption per token, whichever worker won it.
    settled(database_url)
    store = open_store(database_url)
    try:
        with store.transaction(write=False) as tx:
            for guid in redeemed:
                kinds = [r["event"] for r in tx.audit_rows(equal={"staging_guid": guid})]
                assert kinds.count("token.redeemed") == 1, (guid, kinds)
    finally:
        store.close()


def test_a_killed_worker_is_replaced_and_the_other_serves_meanwhile(
    tmp_path: Path, clients: Clients
) -> None:
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", PUBLIC)
    provision(env, tmp_path, clients.all())
    b = start_broker(env, tmp_path / "broker.log", workers=2)
    try:
        victim, survivor = two_workers(b)
        os.kill(victim, signal.SIGKILL)
        for i in range(10):  # new connections: the survivor takes them while uvicorn respawns
            token = minted_token(b.url, clients.cc, audience=PUBLIC, staging_guid=f"stg-k{i}")
            r = b.post("/v1/redemptions", clients.tailor.headers(PUBLIC), {"token": token})
            assert r.status_code == 200
        deadline = time.monotonic() + 30
        while not (len(now := b.workers()) == 2 and victim not in now and survivor in now):
            assert time.monotonic() < deadline, f"workers: {now}"
            time.sleep(0.1)
    finally:
        b.stop()


@pytest.mark.parametrize("value", ["0", "-1", "two", "257"])
def test_bad_worker_counts_are_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", PUBLIC)
    done = broker_cli(env, "serve", "--port", "1", "--workers", value)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--workers" in done.stderr, done.stderr


def test_misconfiguration_with_workers_is_one_line_before_any_worker(tmp_path: Path) -> None:
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", PUBLIC)  # no keys yet
    done = broker_cli(env, "serve", "--port", "1", "--workers", "2")
    assert done.returncode == 1
    assert done.stderr.startswith("broker: error: ") and done.stderr.count("\n") == 1
    assert "keys init" in done.stderr, done.stderr
    done = broker_cli({**env, "BROKER_METRICS_ADDR": "127.0.0.1:1"}, "serve", "--workers", "2")
    assert done.returncode == 1 and "BROKER_METRICS_ADDR" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
