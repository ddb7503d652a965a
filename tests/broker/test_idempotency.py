"""Repeatable actions: a mint, a redemption or a completion sent again with its
Idempotency-Key (and a fresh assertion) gets the first answer again; without the key
it is what it always was, a replay or a conflict."""

from __future__ import annotations

import functools
import secrets
import time

from broker.store.sqlite import SqliteStore
from tests.support.brokerapp import Api
from tests.support.concurrency import together
from tests.support.credentials import PASSWORD

PROBLEM = "application/problem+json"
RACERS = 8


def key() -> str:
    return secrets.token_urlsafe(24)


def events(api: Api) -> list[tuple[str, str | None, str | None]]:
    return [(r.event, r.reason, r.detail.get("action")) for r in api.service.audit.page(0, 1000)]


def test_a_repeated_mint_gets_the_same_token(api: Api) -> None:
    k = key()
    first = api.mint(key=k)
    again = api.mint(key=k)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert api.mint().status_code == 409  # without the key: the staging exists already
    assert api.redeem(again.json()["token"]).status_code == 200  # the one token, and it works
    assert events(api)[:2] == [("token.issued", None, None), ("request.repeated", None, "mint")]
    assert [e for e, _, _ in events(api)].count("token.issued") == 1


def test_a_key_is_one_request(api: Api) -> None:
    """The same key with another body is refused (422) and does nothing; a quoted key (as
    the IETF draft writes it) is the same key."""
    k = key()
    assert api.mint(key=k).status_code == 201
    other = api.mint(key=k, image="registry.example.com/team/other:1")
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert "Idempotency-Key" in other.json()["detail"]
    password = api.mint(key=k, password="not-" + PASSWORD)
    assert password.status_code == 422 and PASSWORD not in password.text
    quoted = api.mint(key=f'"{k}"')
    assert quoted.status_code == 201
    elsewhere = api.mint("stg-2", key=k)
    assert elsewhere.status_code == 422
    assert api.service.stagings.get("stg-2") is None
    assert [e for e, _, _ in events(api)].count("token.issued") == 1


def test_a_malformed_key_is_refused_before_anything_is_done(api: Api) -> None:
    for bad in ("short", "x" * 256, "has space in it!!", 'a"quote-inside-it-x'):
        r = api.mint(key=bad)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, bad
        assert "Idempotency-Key must be" in r.json()["detail"]
    assert api.service.stagings.get("stg-1") is None
    assert events(api) == []


def test_a_repeated_redemption_opens_the_credentials_again(api: Api) -> None:
    token = api.mint().json()["token"]
    k = key()
    first = api.redeem(token, key=k)
    again = api.redeem(token, key=k)
    assert first.status_code == again.status_code == 200, again.text
    assert (again.json()["username"], again.json()["password"]) == ("alice", PASSWORD)
    assert again.json() == first.json()
    assert again.headers["cache-control"] == "no-store"
    # Without the key, or with another one, it is a replay, as ever.
    for other in (None, key()):
        r = api.redeem(token, key=other)
        assert r.status_code == 400, other
    # Another tailor with the same key: not the bound tailor.
    assert api.redeem(token, who=api.clients.tailor2, key=k).status_code == 400
    got = events(api)
    assert [e for e, _, _ in got].count("token.redeemed") == 1
    assert ("request.repeated", None, "redeem") in got
    metrics = api.http.get("/metrics").text
    assert 'stager_requests_repeated_total{action="redeem"} 1.0' in metrics
    assert "stager_tokens_redeemed_total 1.0" in metrics
    assert [r for e, r, _ in got if e == "token.refused"] == [
        "replay: already redeemed",
        "replay: already redeemed",
        "not the bound tailor",
    ]
    # Once the staging is closed, its credentials are gone: a repeat gets nothing.
    assert api.complete("stg-1", "succeeded").status_code == 200
    closed = api.redeem(token, key=k)
    assert closed.status_code == 400 and PASSWORD not in closed.text
    assert events(api)[-1][:2] == ("token.refused", "staging completed")


def test_a_repeated_completion_gets_the_same_end(api: Api) -> None:
    assert api.redeem(api.mint().json()["token"]).status_code == 200
    k = key()
    first = api.complete("stg-1", "failed", key=k, error="boom")
    again = api.complete("stg-1", "failed", key=k, error="boom")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() == {"staging_guid": "stg-1", "state": "failed"}
    assert api.complete("stg-1", "failed", error="boom").status_code == 409
    changed = api.complete("stg-1", "succeeded", key=k)
    assert changed.status_code == 422
    got = [e for e, _, _ in events(api)]
    assert got.count("staging.failed") == 1 and got.count("request.repeated") == 1


def test_raced_repeats_get_one_action_and_the_same_answer_on_every_store(
    api_each_store: Api,
) -> None:
    """A caller's retries racing its first request (a balancer's slow answer): one action,
    every one of them the first answer; a keyless request after them is a replay."""
    api = api_each_store
    k = key()
    mints = together([functools.partial(api.mint, key=k)] * RACERS)
    assert [r.status_code for r in mints] == [201] * RACERS, [r.text for r in mints]
    assert len({r.json()["token"] for r in mints}) == 1
    token = mints[0].json()["token"]

    k2 = key()
    redeems = together([functools.partial(api.redeem, token, key=k2)] * RACERS)
    assert [r.status_code for r in redeems] == [200] * RACERS, [r.text for r in redeems]
    assert {r.json()["password"] for r in redeems} == {PASSWORD}
    assert api.redeem(token).status_code == 400  # no key: a replay

    k3 = key()
    ends = together([functools.partial(api.complete, "stg-1", "succeeded", key=k3)] * RACERS)
    assert [r.status_code for r in ends] == [200] * RACERS
    got = events(api)
    names = [e for e, _, _ in got]
    assert names.count("token.issued") == names.count("token.redeemed") == 1
    assert names.count("staging.completed") == 1
    repeated = sorted(str(a) for e, _, a in got if e == "request.repeated")
    assert repeated == sorted(["mint", "redeem", "complete"] * (RACERS - 1))
    assert [r for e, r, _ in got if e == "token.refused"] == ["replay: already redeemed"]


def test_the_window_ends(api: Api) -> None:
    """After the window a key is forgotten (a mint's repeat is then the conflict it is
    without a key), and the sweeper deletes its row."""
    k = key()
    assert api.mint(key=k).status_code == 201
    kept = api.service.stagings._idempotency.key(api.clients.cc.name, k)
    window = api.service.settings.idempotency_seconds
    now = int(time.time())
    with api.store.transaction() as tx:
        assert tx.get_idempotency(kept.client, kept.id, now) is not None
        assert tx.get_idempotency(kept.client, kept.id, now + window + 1) is None
    api.service.stagings.sweep()
    with api.store.transaction() as tx:
        assert tx.get_idempotency(kept.client, kept.id, now) is not None  # in its window
    real = time.time
    api.service.clock = lambda: real() + window + 1
    api.service.stagings.sweep()
    with api.store.transaction() as tx:
        assert tx.get_idempotency(kept.client, kept.id, 0) is None


def test_the_store_holds_no_key_token_or_password(api: Api) -> None:
    k = key()
    minted = api.mint(key=k)
    token = minted.json()["token"]
    api.redeem(token, key=k + "r")
    api.complete("stg-1", "succeeded", key=k + "c")
    assert isinstance(api.store, SqliteStore)
    api.store.close()
    raw = b"".join(p.read_bytes() for p in api.store.path.parent.glob(api.store.path.name + "*"))
    for secret in (k, k + "r", k + "c", token, PASSWORD):
        assert secret.encode() not in raw
