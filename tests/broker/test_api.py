"""The broker's HTTP API in-process: every rule of the token's life, and the error shapes."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpx2 import Response
from starlette.requests import Request

from broker.api.errors import answer
from broker.api.routes import ROUTERS
from broker.audit import make_filter
from broker.errors import AuditTampered, OutcomeUnknown, StoreError, StoreFull
from broker.keys import retire_token_key, rotate_token_keys
from broker.service import READY_CACHE_SECONDS
from broker.settings import Settings
from broker.store.model import Role
from broker.store.sqlite import SqliteStore
from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.brokerapp import AUD, Api, serve
from tests.support.clients import Client, new_client
from tests.support.concurrency import together
from tests.support.credentials import PASSWORD

PROBLEM = "application/problem+json"


def audit(api: Api) -> list[tuple[str, str | None]]:
    return [(r.event, r.reason) for r in api.service.audit.page(0, 1000)]


def test_mint_lookup_redeem_complete(api: Api) -> None:
    c = api.clients
    minted = api.mint()
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    assert token.startswith("st1.") and PASSWORD not in minted.text

    look = api.lookup(token, c.tailor)
    assert look.status_code == 200
    assert look.json()["state"] == "open" and look.json()["redeemed"] is False
    assert look.json()["image"] == "registry.example.com/team/app:1.0"

    got = api.redeem(token)
    assert got.status_code == 200, got.text
    assert got.headers["cache-control"] == "no-store"
    body = got.json()
    assert body["registry"] == "registry.example.com"
    assert (body["username"], body["password"]) == ("alice", PASSWORD)

    again = api.redeem(token)
    assert again.status_code == 400 and again.headers["content-type"] == PROBLEM

    look2 = api.lookup(token)
    assert look2.json()["state"] == "redeemed" and look2.json()["redeemed"] is True

    done = api.complete("stg-1", "succeeded", result={"docker_image": "x@sha256:1"})
    assert done.status_code == 200 and done.json()["state"] == "completed"
    twice = api.complete("stg-1", "failed")
    assert twice.status_code == 409

    events = [e for e, _ in audit(api)]
    assert events == [
        "token.issued",
        "token.lookup",
        "token.redeemed",
        "token.refused",
        "token.lookup",
        "staging.completed",
        "credentials.purged",
    ]
    assert ("token.refused", "replay: already redeemed") in audit(api)
    with api.store.transaction() as tx:
        assert tx.get_sealed("stg-1") is None


def test_a_public_image_staging_carries_no_credentials(api: Api) -> None:
    public = {"image": "registry.example.com/library/hello:1", "username": None, "password": None}
    minted = api.mint("stg-pub", **public)
    assert minted.status_code == 201, minted.text
    got = api.redeem(minted.json()["token"])
    assert got.status_code == 200, got.text
    assert (got.json()["username"], got.json()["password"]) == (None, None)
    done = api.complete("stg-pub", "failed")
    assert done.status_code == 200
    rows = api.service.audit.page(0, 100, make_filter(staging="stg-pub"))
    assert [r.event for r in rows] == [
        "token.issued",
        "token.redeemed",
        "staging.failed",
        "credentials.purged",
    ]
    assert {r.registry_username for r in rows} == {None}
    # Half a credential is a mistake, not a public image: refused, nothing minted.
    for half in ({"username": "alice"}, {"password": PASSWORD}):
        r = api.mint("h", **public | half)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
        assert "go together" in r.json()["detail"] and PASSWORD not in r.text
    with api.store.transaction() as tx:
        assert tx.get_staging("h") is None


def test_every_refusal_looks_the_same(api: Api, settings: Settings) -> None:
    c = api.clients
    token = api.mint().json()["token"]
    other = api.mint("stg-2").json()["token"]
    api.call("DELETE", "/v1/stagings/stg-2", c.cc)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    answers = [
        api.redeem(token, c.tailor2),  # wrong tailor
        api.redeem(flipped),  # tampered
        api.redeem("garbage"),  # malformed
        api.redeem(other),  # cancelled
    ]
    bodies = {(a.status_code, a.text) for a in answers}
    assert len(bodies) == 1, bodies
    status, text = bodies.pop()
    assert status == 400 and json.loads(text)["title"] == "staging token refused"
    reasons = [r for e, r in audit(api) if e == "token.refused"]
    assert reasons == ["not the bound tailor", "tampered", "malformed", "staging cancelled"]
    # The token survived the wrong tailor's attempt.
    ok = api.redeem(token)
    assert ok.status_code == 200


def test_roles_are_enforced(api: Api) -> None:
    c = api.clients
    assert api.mint().status_code == 201
    payload = staging_token_body(staging_guid="s9", image="x/y", username="u", password="p")
    for who in (c.tailor, c.auditor, c.puller):
        r = api.call("POST", STAGING_TOKENS, who, json=payload)
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    token = api.mint("s10").json()["token"]
    for who in (c.cc, c.auditor, c.puller):
        assert api.redeem(token, who).status_code == 403
    assert api.call("DELETE", "/v1/stagings/s10", c.tailor).status_code == 403
    assert api.complete("s10", "failed", c.cc).status_code == 403


def test_a_tailor_completes_only_its_own_staging(api: Api) -> None:
    c = api.clients
    assert api.redeem(api.mint().json()["token"]).status_code == 200
    r = api.complete("stg-1", "failed", c.tailor2)
    assert r.status_code == 404
    r = api.complete("stg-1", "failed", error="upstream said 404")
    assert r.json()["state"] == "failed"
    assert ("staging.failed", None) in audit(api)


def test_cancel_purges_and_is_idempotent(api: Api) -> None:
    c = api.clients
    token = api.mint().json()["token"]
    assert api.call("DELETE", "/v1/stagings/stg-1", c.cc).status_code == 204
    assert api.call("DELETE", "/v1/stagings/stg-1", c.cc).status_code == 204
    assert api.call("DELETE", "/v1/stagings/nope", c.cc).status_code == 404
    assert api.redeem(token).status_code == 400
    assert [e for e, _ in audit(api)].count("credentials.purged") == 1


def test_only_a_redeemed_staging_can_be_completed(api: Api) -> None:
    """The bound tailor completes what it redeemed, not a staging it never opened."""
    assert api.mint().status_code == 201
    r = api.complete("stg-1", "succeeded", result={"docker_image": "x@sha256:1"})
    assert r.status_code == 409 and "not redeemed" in r.json()["detail"], r.text
    with api.store.transaction() as tx:
        staging = tx.get_staging("stg-1")
        assert staging is not None and staging.state == "open" and tx.get_sealed("stg-1")


RACERS = 12


def test_a_raced_redemption_is_audited_as_a_replay_on_every_store(api_each_store: Api) -> None:
    """Many redemptions of one token at once: one wins, every other is a replay (the sign of
    a stolen token), never "expired" (PostgreSQL once decided on the row read before the
    winner committed)."""
    api = api_each_store
    rounds = 5  # the losers' window is narrow: several races make missing it unlikely
    for n in range(rounds):
        token = api.mint(f"stg-{n}").json()["token"]
        answers = together([functools.partial(api.redeem, token) for _ in range(RACERS)])
        assert sorted(a.status_code for a in answers) == [200] + [400] * (RACERS - 1)
    refused = [r for e, r in audit(api) if e == "token.refused"]
    assert refused == ["replay: already redeemed"] * (RACERS - 1) * rounds
    assert [e for e, _ in audit(api)].count("token.redeemed") == rounds


def test_raced_cancels_and_completions_answer_from_the_row_as_it_is(api_each_store: Api) -> None:
    """Cancel is idempotent under a race too; a losing completion names the state it lost to."""
    api = api_each_store
    c = api.clients
    assert api.mint().status_code == 201
    cancels = together([lambda: api.call("DELETE", "/v1/stagings/stg-1", c.cc)] * RACERS)
    assert [r.status_code for r in cancels] == [204] * RACERS, [r.text for r in cancels]
    assert [e for e, _ in audit(api)].count("staging.cancelled") == 1

    assert api.redeem(api.mint("stg-2").json()["token"]).status_code == 200
    ends = together([lambda: api.complete("stg-2", "failed", error="x")] * RACERS)
    assert sorted(r.status_code for r in ends) == [200] + [409] * (RACERS - 1)
    lost = {r.json()["detail"] for r in ends if r.status_code == 409}
    assert lost == {"staging stg-2 is already failed"}
    assert [e for e, _ in audit(api)].count("staging.failed") == 1


def test_the_redemption_names_its_staging(api: Api) -> None:
    token = api.mint("stg-9").json()["token"]
    assert api.redeem(token).json()["staging_guid"] == "stg-9"


def test_duplicate_staging_is_a_conflict(api: Api) -> None:
    assert api.mint().status_code == 201
    r = api.mint()
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM


def test_expiry_and_the_sweeper(api: Api) -> None:
    service = api.service
    token = api.mint(ttl_seconds=60).json()["token"]
    api.mint("stg-2", ttl_seconds=600)
    real = time.time
    service.clock = lambda: real() + 61
    later = int(real()) + 61  # the clients' clocks agree with the broker's (30 s skew)

    def signed_later(who: Client) -> dict[str, str]:
        return {"Authorization": f"Bearer {who.assertion(AUD, iat=later, exp=later + 60)}"}

    c = api.clients
    r = api.http.post("/v1/redemptions", json={"token": token}, headers=signed_later(c.tailor))
    assert r.status_code == 400
    look = api.http.post(
        STAGING_TOKENS + "/lookup", json={"token": token}, headers=signed_later(c.cc)
    )
    assert look.json()["state"] == "expired"
    assert service.stagings.sweep() == 1
    assert service.stagings.sweep() == 0
    with api.store.transaction() as tx:
        assert tx.get_sealed("stg-1") is None and tx.get_sealed("stg-2") is not None
        assert tx.get_staging("stg-1").state == "expired"  # type: ignore[union-attr]
    assert ("token.refused", "expired") in audit(api)


def test_ttl_bounds_and_default(api: Api) -> None:
    assert api.mint(ttl_seconds=10).status_code == 422
    assert api.mint(ttl_seconds=100000).status_code == 422
    r = api.mint()
    expires = r.json()["expires_at"]
    from datetime import datetime

    left = datetime.fromisoformat(expires).timestamp() - time.time()
    assert 880 < left <= 900


def test_unknown_tailor_and_bad_image_are_422(api: Api) -> None:
    assert api.mint(tailor="nobody").status_code == 422
    assert api.mint(tailor=api.clients.cc.name).status_code == 422
    r = api.mint(image="Bad/IMAGE")
    assert r.status_code == 422 and "lower-case" in r.json()["detail"]


def test_rotation_and_retirement(api: Api, settings: Settings) -> None:
    old = api.mint().json()["token"]
    old_kid = old.split(".")[1]
    rotate_token_keys(settings.keys_dir)
    new = api.mint("stg-2").json()["token"]
    assert new.split(".")[1] != old_kid
    look = api.lookup(old)
    assert look.status_code == 200  # older keys still decrypt
    retire_token_key(settings.keys_dir, old_kid)
    assert api.redeem(old).status_code == 400
    assert api.redeem(new).status_code == 200
    assert ("token.refused", "unknown or retired key") in audit(api)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 422),
        (b"[]", 422),
        (b'{"token": 5}', 422),
        (b'{"token": "x", "extra": 1}', 422),
        (b"", 422),
    ],
)
def test_malformed_bodies_are_problems(api: Api, body: bytes, status: int) -> None:
    json_type = {"Content-Type": "application/json"}
    r = api.call("POST", "/v1/redemptions", api.clients.tailor, content=body, headers=json_type)
    assert r.status_code == status
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["status"] == status


def test_validation_errors_never_echo_the_password(api: Api) -> None:
    r = api.mint(ttl_seconds="x" + PASSWORD)
    assert r.status_code == 422
    r2 = api.mint(password=[PASSWORD])
    assert r2.status_code == 422
    assert PASSWORD not in r.text and PASSWORD not in r2.text


def test_oversized_bodies_are_413(api: Api) -> None:
    r = api.redeem("x" * 70000)
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM

    def stream() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    json_type = {"Content-Type": "application/json"}
    r = api.call("POST", "/v1/redemptions", api.clients.tailor, content=stream(), headers=json_type)
    assert r.status_code == 413


def test_client_assertions(api: Api) -> None:
    c = api.clients
    path = "/v1/staging-tokens/lookup"
    body = {"token": "x"}
    cases = {
        "expired": c.cc.assertion(AUD, lifetime=-120),
        "too long": c.cc.assertion(AUD, lifetime=3600),
        "wrong aud": c.cc.assertion("http://elsewhere"),
        "sub differs": c.cc.assertion(AUD, sub="other"),
        "no jti": c.cc.assertion(AUD, jti=None),
        "garbage": "not.a.jwt",
    }
    for name, assertion in cases.items():
        r = api.http.post(path, json=body, headers={"Authorization": f"Bearer {assertion}"})
        assert r.status_code == 401, name
        assert r.headers["content-type"] == PROBLEM
    assert api.http.post(path, json=body).status_code == 401
    # A replayed assertion is refused the second time.
    once = c.cc.assertion(AUD)
    first = api.http.post(path, json=body, headers={"Authorization": f"Bearer {once}"})
    again = api.http.post(path, json=body, headers={"Authorization": f"Bearer {once}"})
    assert first.status_code == 400 and again.status_code == 401


def test_clock_skew_is_told_and_nothing_else(api: Api) -> None:
    """A genuine assertion from a clock 31 s off (either way) gets 401 saying "clock skew",
    naming no client; 29 s off is accepted; an unknown client's gets the bare 401."""
    c = api.clients
    path = "/v1/staging-tokens/lookup"
    body = {"token": "x"}

    def post(assertion: str) -> Response:
        return api.http.post(path, json=body, headers={"Authorization": f"Bearer {assertion}"})

    now = int(time.time())
    api.service.clock = lambda: float(now)  # no second may tick between here and there
    for offset in (-31, 31):
        r = post(c.cc.assertion(AUD, iat=now + offset, exp=now + offset + 60))
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
        side = "ahead of" if offset > 0 else "behind"
        assert r.json()["detail"].startswith(
            f"clock skew: the assertion was issued {abs(offset)} s {side} the broker's clock"
        )
        assert c.cc.name not in r.text and c.cc.public_pem not in r.text
    for offset in (-29, 29):
        r = post(c.cc.assertion(AUD, iat=now + offset, exp=now + offset + 60))
        assert r.status_code == 400, r.text  # authenticated; the token "x" is refused
    ghost = new_client("ghost", "cc").assertion(AUD, iat=now - 100, exp=now - 40)
    r = post(ghost)
    assert r.status_code == 401 and "detail" not in r.json()
    text = api.http.get("/metrics").text
    assert 'stager_client_auth_failures_total{reason="clock_skew"} 2.0' in text


def test_jwks_health_and_metrics(api: Api) -> None:
    keys = api.http.get("/.well-known/jwks.json").json()["keys"]
    assert {k["alg"] for k in keys} == {"EdDSA", "ES256"}
    assert all("d" not in k for k in keys)  # public halves only
    assert api.http.get("/healthz").json() == {"status": "ok"}
    token = api.mint().json()["token"]
    api.redeem(token)
    api.redeem(token)
    text = api.http.get("/metrics").text
    assert "stager_tokens_issued_total 1.0" in text
    assert "stager_tokens_redeemed_total 1.0" in text
    assert 'stager_tokens_refused_total{action="redeem"} 1.0' in text


def test_unknown_paths_and_methods_are_problems(api: Api) -> None:
    assert api.http.get("/v1/nothing").headers["content-type"] == PROBLEM
    r = api.http.get("/v1/redemptions")
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM


def test_the_database_never_holds_the_password_or_token(api: Api, tmp_path: Path) -> None:
    token = api.mint().json()["token"]
    api.redeem(token)
    api.mint("stg-2")
    for path in tmp_path.glob("broker.sqlite*"):
        data = path.read_bytes()
        assert PASSWORD.encode() not in data and token.encode() not in data
    db = sqlite3.connect(tmp_path / "broker.sqlite")
    dump = "\n".join(db.iterdump())
    assert PASSWORD not in dump and token not in dump


def test_assertions_are_spent_even_when_the_action_fails(api: Api) -> None:
    c = api.clients
    once = c.cc.assertion(AUD)
    headers = {"Authorization": f"Bearer {once}"}
    assert api.http.delete("/v1/stagings/nope", headers=headers).status_code == 404
    assert api.http.delete("/v1/stagings/nope", headers=headers).status_code == 401
    denied = c.tailor.assertion(AUD)
    h2 = {"Authorization": f"Bearer {denied}"}
    assert api.http.delete("/v1/stagings/nope", headers=h2).status_code == 403
    assert api.http.delete("/v1/stagings/nope", headers=h2).status_code == 401
    text = api.http.get("/metrics").text
    assert 'stager_client_auth_failures_total{reason="replayed"} 2.0' in text


def test_removed_clients_stop_working(api: Api) -> None:
    c = api.clients
    assert api.mint().status_code == 201
    with api.store.transaction() as tx:
        tx.remove_client(c.cc.name)
    api.service.clients._cache.clear()  # skip the 2 s cache
    assert api.mint("stg-2").status_code == 401


def test_only_a_lost_commit_answer_is_not_called_nothing_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every 503 of a failed store says "nothing was done" (it was rolled back), except
    OutcomeUnknown: PostgreSQL's answer to the COMMIT was lost, so it may have been done.
    (tests/integration/test_lost_commit.py loses one for real.)"""
    request = Request({"type": "http", "headers": []})
    for exc in (StoreError("x"), StoreFull("x"), AuditTampered("x")):
        r = answer(request, exc)
        assert r.status_code == 503 and r.media_type == PROBLEM
        assert "nothing was done" in json.loads(bytes(r.body))["detail"]
    caplog.clear()
    r = answer(request, OutcomeUnknown("the database's answer to COMMIT was lost"))
    detail = json.loads(bytes(r.body))["detail"]
    assert r.status_code == 503 and r.media_type == PROBLEM
    assert "nothing was done" not in detail and "outcome is unknown" in detail
    assert "Idempotency-Key" in detail and "/v1/staging-tokens/lookup" in detail
    [line] = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert line.levelno == logging.ERROR and "may have been done" in line.getMessage()


def test_audit_write_failure_is_503_and_nothing_happens(api: Api, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "broker.sqlite")
    db.execute(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events"
        " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
    )
    db.commit()
    r = api.mint()
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
    assert "nothing was done" in r.json()["detail"]
    db.execute("DROP TRIGGER no_audit")
    db.commit()
    db.close()
    with api.store.transaction() as tx:
        assert tx.get_staging("stg-1") is None and tx.get_sealed("stg-1") is None
    assert api.mint().status_code == 201  # the same staging can be minted now


def _page_limit(api: Api, pages: int | None) -> None:
    """Cap every broker connection's database at its size now (SQLITE_FULL, the error of
    a full disk), or lift the cap (None)."""
    store = api.service._store
    assert isinstance(store, SqliteStore)
    for conn in list(store._all):
        limit = pages or conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={limit}")


def test_a_full_database_is_503_and_readyz_takes_the_broker_out(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite rolls a failed write back itself: the store must not ROLLBACK again (that
    raised, and the caller got a 500 text/plain). A problem, a log line that says full,
    /readyz 503 until space is freed, and nothing half-written."""
    ready = api.call("GET", "/readyz", None)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert api.mint("warm").status_code == 201  # the broker's connection exists
    _page_limit(api, None)
    for n in range(500):
        r = api.mint(f"fill-{n}")
        if r.status_code != 201:
            break
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
    assert "nothing was done" in r.json()["detail"]
    lines = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert any("full" in line for line in lines), lines
    assert not any("Exception in ASGI application" in line for line in lines), lines
    assert api.mint(f"fill-{n}").status_code == 503  # still full: the same answer
    not_ready = api.call("GET", "/readyz", None)
    assert not_ready.status_code == 503 and not_ready.headers["content-type"] == PROBLEM
    assert "full" in not_ready.json()["detail"]
    assert api.call("GET", "/healthz", None).status_code == 200  # alive all the same

    _page_limit(api, 1 << 30)  # space freed
    time.sleep(READY_CACHE_SECONDS + 0.1)
    assert api.call("GET", "/readyz", None).status_code == 200
    assert api.mint(f"fill-{n}").status_code == 201
    with api.store.transaction() as tx:
        minted = [s.staging_guid for s in tx.all_stagings()]
    issued = [r.staging_guid for r in api.service.audit.page(0, 1000) if r.event == "token.issued"]
    assert minted == issued == ["warm", *(f"fill-{i}" for i in range(n + 1))]
    report = api.call("GET", "/v1/audit/verify", api.clients.auditor).json()
    assert report["intact"] is True, report


def test_readyz_probes_each_store_and_leaves_nothing(api_each_store: Api) -> None:
    api = api_each_store
    for _ in range(3):  # the probe's answer is kept for a second: asked again, not probed
        r = api.call("GET", "/readyz", None)
        assert r.status_code == 200 and r.json() == {"status": "ready"}, r.text
    with api.store.transaction() as tx:
        assert tx._one("SELECT COUNT(*) FROM used_assertions WHERE client='broker:readyz'") == (0,)


def test_the_sweeper_thread_expires_stagings(settings: Settings, clients) -> None:
    fast = settings.model_copy(update={"sweep_interval_seconds": 0.05})
    with serve(fast, clients, sweep=True) as api:
        assert api.mint(ttl_seconds=30).status_code == 201
        real = time.time
        api.service.clock = lambda: real() + 31
        deadline = real() + 10
        state = "open"
        while state != "expired" and real() < deadline:
            time.sleep(0.05)
            with api.store.transaction(write=False) as tx:
                state = tx.get_staging("stg-1").state  # type: ignore[union-attr]
        assert state == "expired"
        assert ("credentials.purged", None) in audit(api)


# Every route that acts for a client, with a request its schema accepts, and an allowed role.
# One row a route: the formatter would spread each over several lines and hide the table.
PUBLIC_MINT = staging_token_body(staging_guid="s", username=None, password=None)
TOKEN_BODY = {"token": "st1.x.y"}
OAUTH_FORM = {"grant_type": "password", "service": "internal-registry"}
ACTING: dict[tuple[str, str], tuple[Role, dict[str, object]]] = {
    ("POST", "/v1/staging-tokens"): ("cc", {"json": PUBLIC_MINT}),
    ("POST", "/v1/staging-tokens/lookup"): ("cc", {"json": {"token": "st1.x.y"}}),
    ("POST", "/v1/redemptions"): ("tailor", {"json": {"token": "st1.x.y"}}),
    ("POST", "/v1/stagings/{staging_guid}/complete"): ("tailor", {"json": {"status": "failed"}}),
    ("POST", "/v1/stagings/{staging_guid}/upstream-token"): ("tailor", {"json": TOKEN_BODY}),
    ("DELETE", "/v1/stagings/{staging_guid}"): ("cc", {}),
    ("GET", "/v1/stagings/{staging_guid}/egress-rules"): ("cc", {}),
    ("GET", "/v1/stagings/{staging_guid}/receipt"): ("cc", {}),
    ("GET", "/v1/registry-token"): ("puller", {"params": {"service": "internal-registry"}}),
    ("POST", "/v1/registry-token"): ("puller", {"data": OAUTH_FORM}),  # the form, below
    ("POST", "/v1/puller-sessions"): ("puller", {}),
    ("POST", "/v1/apps/{app_guid}/pull-credentials"): ("cc", {}),
    ("GET", "/v1/apps/{app_guid}/pull-credentials"): ("cc", {}),
    ("DELETE", "/v1/apps/{app_guid}/pull-credentials"): ("cc", {}),
    ("GET", "/v1/audit"): ("auditor", {}),
    ("GET", "/v1/audit/verify"): ("auditor", {}),
    ("POST", "/audit/login"): ("auditor", {"follow_redirects": False}),  # the form, below
}  # fmt: skip


def _send(api: Api, method: str, url: str, assertion: str, kwargs: dict[str, object]):
    """The request, with the assertion where the route reads it (a header, or the page's
    login form)."""
    if url == "/audit/login":
        kwargs = {**kwargs, "data": {"assertion": assertion}}
    elif method == "POST" and url == "/v1/registry-token":
        who = _client_of(api, assertion)
        data = {**kwargs["data"], "username": who, "password": assertion}  # type: ignore[dict-item]
        kwargs = {**kwargs, "data": data}
    else:
        kwargs = {**kwargs, "headers": {"Authorization": f"Bearer {assertion}"}}
    return api.http.request(method, url, **kwargs)  # type: ignore[arg-type]


def _client_of(api: Api, assertion: str) -> str:
    """The client an assertion names (its ``iss``)."""
    import base64 as b64

    claims = json.loads(b64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
    return str(claims["iss"])


def _unauthenticated(response) -> bool:
    """Refused as an unknown or replayed assertion (the API's problem, or the login page's)."""
    if response.headers.get("content-type", "").startswith("text/html"):
        return response.status_code == 401 and "not accepted" in response.text
    return response.status_code == 401 and response.json()["type"].endswith(":unauthenticated")


def test_every_acting_route_spends_its_assertion_once(api: Api) -> None:
    """Structural: a route acts for a client only through Caller, and whatever it answers
    (success, refusal, wrong role), the same assertion is refused the second time."""
    from fastapi.routing import APIRoute

    from broker.api.deps import Caller
    from broker.api.routes import ROUTERS

    acting = {
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        and any(isinstance(d.call, Caller) for d in route.dependant.dependencies)
        for method in route.methods or ()
    }
    assert acting == set(ACTING), "a new acting route needs a row here"
    by_role = {c.role: c for c in api.clients.all()}
    for (method, path), (role, kwargs) in ACTING.items():
        # Staging "s" is the one the first row mints; egress rules ask about no staging
        # (a real one would probe its registry over the network).
        url = path.replace("{staging_guid}", "none" if "egress" in path else "s")
        url = url.replace("{app_guid}", "app-1")
        for who in (by_role[role], by_role["puller" if role != "puller" else "cc"]):
            assertion = who.assertion(AUD)
            first = _send(api, method, url, assertion, kwargs)
            where = (method, path, who.role, first.text)
            assert not _unauthenticated(first) and first.status_code != 422, where
            assert first.status_code < 500, where
            again = _send(api, method, url, assertion, kwargs)
            assert _unauthenticated(again), (method, path, who.role, again.text)


def test_input_no_store_can_hold_is_a_4xx_not_a_crash(api_each_store: Api) -> None:
    """NUL (PostgreSQL text cannot hold it) and dates no clock can hold: refused as the
    caller's mistake, never a 5xx or a "store failure" anyone can put in the error log."""
    api, c = api_each_store, api_each_store.clients
    for field in ("user", "username"):
        extra = {"password": "pw"} if field == "username" else {}
        r = api.mint(f"nul-{field}", **{field: "a\x00b"}, **extra)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (field, r.text)
    minted = api.mint("nul-complete").json()["token"]
    assert api.redeem(minted).status_code == 200
    # A hostile registry's error text is what it is: recorded (inside JSON), not refused.
    r = api.complete("nul-complete", "failed", error="upstream said \x00")
    assert r.status_code == 200, r.text
    forged_iss = c.cc.assertion(AUD, iss="cloud-controller\x00", sub="cloud-controller\x00")
    r = api.http.post("/v1/staging-tokens/lookup", json={"token": "x"},
                      headers={"Authorization": f"Bearer {forged_iss}"})  # fmt: skip
    assert r.status_code == 401, r.text
    nul_jti = c.cc.assertion(AUD, jti="j\x00")
    r = api.http.post("/v1/staging-tokens/lookup", json={"token": "x"},
                      headers={"Authorization": f"Bearer {nul_jti}"})  # fmt: skip
    assert r.status_code == 401, r.text
    for query in (
        "client=%00",
        "since=0001-01-01T00:00:00%2B14:00",
        "until=9999-12-31T23:00-14:00",
    ):
        r = api.call("GET", f"/v1/audit?{query}", c.auditor)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (query, r.text)
    too_far = f"after={2**64}"  # past a 64-bit seq
    assert api.call("GET", f"/v1/audit?{too_far}", c.auditor).status_code == 422
    cookie = api.service.auditors.start(c.auditor.name, 60)
    api.http.cookies.set("stager_audit", cookie)
    page = api.http.get(f"/audit?{too_far}")
    assert page.status_code == 200 and "No events match" in page.text


def _signed_in(api: Api) -> str:
    """Sign in on the page's form with an auditor's assertion; the session cookie."""
    r = api.http.post(
        "/audit/login",
        data={"assertion": api.clients.auditor.assertion(AUD)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return r.cookies["stager_audit"]


def test_signing_out_ends_the_session_on_the_server(api: Api) -> None:
    cookie = _signed_in(api)
    api.http.cookies.set("stager_audit", cookie)
    assert api.http.get("/audit").status_code == 200
    assert api.http.get("/audit/logout", follow_redirects=False).status_code == 303
    api.http.cookies.set("stager_audit", cookie)  # a copy kept from before the sign-out
    again = api.http.get("/audit")
    assert again.status_code == 401 and "Auditors only" in again.text


def test_the_login_form_refuses_a_cross_site_post(api: Api) -> None:
    """Login CSRF: another site must not sign a browser in (as its own auditor)."""
    assertion = api.clients.auditor.assertion(AUD)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = api.http.post(
            "/audit/login", data={"assertion": assertion}, headers=headers, follow_redirects=False
        )
        assert r.status_code == 403 and "stager_audit" not in r.cookies, (headers, r.text)
    own = {"Origin": AUD, "Sec-Fetch-Site": "same-origin"}
    r = api.http.post(
        "/audit/login", data={"assertion": assertion}, headers=own, follow_redirects=False
    )
    assert r.status_code == 303 and r.cookies["stager_audit"]


def test_guids_that_differ_only_in_case_cannot_share_a_repository(api: Api) -> None:
    """Repository names are lower case: TOK-X and tok-x would be one repository (and
    APP and app one namespace), so a mint names its guids in lower case."""
    for guids in ({"staging_guid": "TOK-X"}, {"staging_guid": "stg-case", "app_guid": "APP"}):
        r = api.mint(**guids)
        assert r.status_code == 422 and "lower case" in r.text, (guids, r.text)
    assert api.mint("tok-x", app_guid="app-x").status_code == 201


def test_metrics_labels_are_a_small_fixed_set_and_tell_no_secrets(api: Api) -> None:
    """Nobody can grow /metrics with header text, tell an unknown client from a bad
    signature there, or read token refusal reasons (those are the audit log's)."""
    import base64
    import json as json_

    def b64(value: object) -> str:
        return base64.urlsafe_b64encode(json_.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": "nobody", "sub": "nobody", "aud": AUD, "exp": int(time.time()) + 60}
    sizes = []
    for n in range(200):  # 200 different algorithms, as an attacker would write them
        fake = f"{b64({'alg': f'X{n:04d}-garbage'})}.{b64(claims)}.AAAA"
        r = api.http.post("/v1/redemptions", json={"token": "x"},
                          headers={"Authorization": f"Bearer {fake}"})  # fmt: skip
        assert r.status_code == 401
        if n in (0, 199):
            sizes.append(len(api.http.get("/metrics").text))
    assert sizes[1] - sizes[0] < 10, sizes  # the same series counted on (a digit or two)

    unknown = api.clients.cc.assertion(AUD, iss="no-such-client", sub="no-such-client")
    forged = api.clients.cc.assertion(AUD)[:-8] + "AAAAAAAA"  # a known client, a bad signature
    for bad in (unknown, forged):
        api.http.post("/v1/redemptions", json={"token": "x"},
                      headers={"Authorization": f"Bearer {bad}"})  # fmt: skip
    text = api.http.get("/metrics").text
    reasons = {line.split('reason="')[1].split('"')[0]
               for line in text.splitlines()
               if line.startswith("stager_client_auth_failures_total{")}  # fmt: skip
    assert reasons <= {"missing", "malformed", "rejected", "invalid", "replayed"}, reasons
    assert "unknown client" not in text and "signature" not in text

    token = api.mint().json()["token"]
    api.redeem(token, api.clients.tailor2)  # not the bound tailor
    api.redeem(token)
    api.redeem(token)  # a replay
    samples = "\n".join(
        line for line in api.http.get("/metrics").text.splitlines() if not line.startswith("#")
    )
    assert "not the bound tailor" not in samples and "replay:" not in samples
    assert 'stager_tokens_refused_total{action="redeem"} 2.0' in samples


def test_metrics_can_be_served_apart_from_the_api(settings: Settings, clients) -> None:
    """BROKER_METRICS_ADDR: /metrics on a scrape address of its own, gone from the API."""
    import requests

    from tests.support.processes import free_port

    addr = f"127.0.0.1:{free_port()}"
    with serve(settings.model_copy(update={"metrics_addr": addr}), clients, sweep=False) as api:
        assert api.mint().status_code == 201
        r = api.http.get("/metrics")
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
        scraped = requests.get(f"http://{addr}/metrics", timeout=5)
        assert scraped.status_code == 200 and "stager_tokens_issued_total 1.0" in scraped.text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{addr}/metrics", timeout=2)  # stopped with the broker


def test_the_sweeper_forgets_spent_assertion_ids(api_each_store: Api) -> None:
    """Spent assertion ids are kept while their assertions could still be replayed, and the
    sweeper deletes them after: the table stays as large as the assertions' lifetime holds,
    not as the broker's history."""
    api = api_each_store
    for n in range(3):
        assert api.mint(f"stg-{n}").status_code == 201

    def spent() -> int:
        with api.store.transaction(write=False) as tx:
            row = tx._one("SELECT COUNT(*) FROM used_assertions")
        return int(row[0]) if row else -1

    assert spent() == 3
    api.service.stagings.sweep()
    assert spent() == 3  # still replayable: kept
    real = time.time
    api.service.clock = lambda: real() + 3600  # past every one's expiry and the margin
    api.service.stagings.sweep()
    assert spent() == 0


def test_the_most_requested_routes_are_matched_first() -> None:
    """A request is matched against the routes one after another, in the order the app
    includes the routers (``ROUTERS``): a cell's registry token, a push's mint and
    redemption and the staging's end come before the rarer ones."""
    order = [
        (sorted(route.methods)[0], route.path)  # type: ignore[attr-defined]
        for router in ROUTERS
        for route in router.routes
    ]
    hot = [
        ("GET", "/v1/registry-token"),
        ("POST", "/v1/staging-tokens"),
        ("POST", "/v1/redemptions"),
        ("POST", "/v1/stagings/{staging_guid}/complete"),
    ]
    assert max(order.index(route) for route in hot) < 10, order
    assert order.index(("GET", "/v1/audit")) > order.index(("POST", "/v1/redemptions"))


def test_the_repeatable_actions_document_their_idempotency_key(api: Api) -> None:
    """The header is read by the caller dependency, not by a FastAPI parameter: the
    OpenAPI document still names it on each repeatable action, and on those only."""
    paths = api.http.get("/openapi.json").json()["paths"]
    keyed = sorted(
        f"{method.upper()} {path}"
        for path, item in paths.items()
        for method, op in item.items()
        if any(p.get("name") == "Idempotency-Key" for p in op.get("parameters", []))
    )
    assert keyed == [
        "POST /v1/redemptions",
        "POST /v1/staging-tokens",
        "POST /v1/stagings/{staging_guid}/complete",
    ]
