"""The audit chain: canonical form, tamper detection on the stored log and on exports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from broker.audit import CATALOG, AuditEvent, AuditFilter, events
from broker.audit.canonical import canonical, canonical_reference
from broker.audit.chain import (
    GENESIS,
    Checkpoint,
    chain_event,
    event_hash,
    sign_checkpoint,
    verify_chain,
)
from broker.audit.export import parse_export, verify_export_file
from broker.keys import load_keys, rotate_audit_key
from broker.settings import Settings
from tests.support import ROOT, markers
from tests.support.brokerapp import AUD, Api, serve
from tests.support.brokerproc import broker_cli
from tests.support.clients import Clients


def test_canonical_form() -> None:
    assert canonical({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert canonical('é\n\t"\\\x01') == '"é\\n\\t\\"\\\\\\u0001"'.encode()
    assert canonical({"\u00e9": 1, "z": 2, "Z": 3}) == '{"Z":3,"z":2,"é":1}'.encode()
    assert canonical(5.0) == b"5"
    with pytest.raises(ValueError):
        canonical(1.5)
    with pytest.raises(ValueError):
        canonical({"x": object()})


def test_the_catalog_is_the_one_definition_of_events() -> None:
    """Every kind carries only AuditEvent's fields, refuses others, and is documented."""
    names = {f.name for f in fields(AuditEvent)}
    docs = (ROOT / "docs" / "audit.md").read_text()
    for name, kind in CATALOG.items():
        assert kind.name == name and kind.carries <= names - {"event", "client", "detail"}
        assert f"`{name}`" in docs, f"docs/audit.md does not describe {name}"
    event = events.TOKEN_ISSUED(client="cc", staging_guid="s", detail={"ttl_seconds": 60})
    assert event == AuditEvent(
        "token.issued", client="cc", staging_guid="s", detail={"ttl_seconds": 60}
    )
    with pytest.raises(ValueError, match="carries no reason"):
        events.TOKEN_ISSUED(client="cc", reason="x")
    with pytest.raises(ValueError, match=r"carries no detail\.password"):
        events.CLIENT_ADDED(client="c", detail={"password": "x"})


def test_event_hash_covers_every_field_and_the_link() -> None:
    body = {"seq": 1, "at": "t", "event": "token.issued", "detail": {"k": 1}}
    base = event_hash(body, GENESIS)
    assert base == event_hash(dict(body), GENESIS)
    assert event_hash({**body, "client": "x"}, GENESIS) != base
    assert event_hash({**body, "detail": {"k": 2}}, GENESIS) != base
    assert event_hash(body, "1" * 64) != base


@pytest.fixture
def chained(settings: Settings, clients: Clients) -> Iterator[Api]:
    """12 events with a checkpoint every 5: checkpoints at 5 and 10."""
    s = settings.model_copy(update={"audit_checkpoint_events": 5})
    with serve(s, clients, sweep=False) as api:
        for n in range(4):  # each: issued, redeemed, completed, purged
            token = api.mint(f"stg-{n}").json()["token"]
            api.redeem(token)
            if n < 2:
                api.complete(f"stg-{n}", "succeeded")
        yield api


def verify(api: Api) -> dict:
    r = api.call("GET", "/v1/audit/verify", api.clients.auditor)
    assert r.status_code == 200, r.text
    return r.json()


def db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))


def test_events_no_checkpoint_covers_are_counted_as_unsigned(
    settings: Settings, clients: Clients
) -> None:
    """As after a crash between checkpoints: events chained but not yet signed are said
    to be, not counted as valid and left at that."""
    s = settings.model_copy(update={"audit_checkpoint_events": 5})
    with serve(s, clients, sweep=False) as api:
        for n in range(4):  # 2 events each: issued, redeemed
            api.redeem(api.mint(f"stg-{n}").json()["token"])
        report = verify(api)
        signed_in = api.http.post(
            "/audit/login",
            data={"assertion": api.clients.auditor.assertion(AUD)},
            headers={"Origin": AUD},
        )
        assert signed_in.status_code == 200, signed_in.text
        page = api.http.get("/audit")
    assert report["intact"] and report["events_total"] == 8
    assert (report["signed_through"], report["events_unsigned"]) == (5, 3)
    assert report["summary"] == (
        "8/8 events valid, 1/1 checkpoints valid, 3 events unsigned "
        "(after event 5, the last a signed checkpoint covers)"
    )
    assert report["summary"] in page.text


def test_an_untouched_log_verifies(chained: Api) -> None:
    report = verify(chained)
    assert report["intact"] and report["summary"] == (
        "12/12 events valid, 2/2 checkpoints valid, 2 events unsigned "
        "(after event 10, the last a signed checkpoint covers)"
    )


def tamper(settings: Settings, *statements: str) -> None:
    conn = db(settings)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["UPDATE audit_events SET reason='nothing to see' WHERE seq=3"], "event 3 changed"),
        (["DELETE FROM audit_events WHERE seq=7"], "event 7 missing (between 6 and 8)"),
        (
            ["DELETE FROM audit_events WHERE seq > 10"],
            "log truncated after event 10: the broker appended up to 12",
        ),
        (
            ["DELETE FROM audit_events WHERE seq >= 8"],
            "log truncated after event 7: signed checkpoint 10 covers events that are gone",
        ),
        (
            [
                "UPDATE audit_events SET seq=-4 WHERE seq=4",
                "UPDATE audit_events SET seq=4 WHERE seq=6",
                "UPDATE audit_events SET seq=6 WHERE seq=-4",
            ],
            "events reordered",
        ),
    ],
)
def test_tampering_with_the_stored_log_is_named(
    chained: Api, settings: Settings, statements: list[str], expected: str
) -> None:
    tamper(settings, *statements)
    report = verify(chained)
    assert not report["intact"]
    assert any(expected in p for p in report["problems"]), report["problems"]
    assert expected in report["summary"] or report["problems"][0] in report["summary"]


TAMPERINGS = [
    ["UPDATE audit_events SET reason='nothing to see' WHERE seq=3"],
    ["DELETE FROM audit_events WHERE seq=7"],
    ["DELETE FROM audit_events WHERE seq >= 8"],
    [
        "UPDATE audit_events SET seq=-4 WHERE seq=4",
        "UPDATE audit_events SET seq=4 WHERE seq=6",
        "UPDATE audit_events SET seq=6 WHERE seq=-4",
    ],
    ["UPDATE audit_checkpoints SET head='" + "f" * 64 + "' WHERE seq=5"],
    [],
]


@pytest.mark.parametrize("statements", TAMPERINGS)
def test_a_streamed_verification_says_what_the_list_one_says(
    chained: Api, settings: Settings, statements: list[str]
) -> None:
    tamper(settings, *statements)
    keys = load_keys(settings.keys_dir).audit_public
    head = chained.service.audit.head
    events = [chain_event(r) for r in chained.service.audit.page(0, 1000)]
    with chained.store.transaction(write=False) as tx:
        checkpoints = [Checkpoint.from_row(r) for r in tx.checkpoint_rows()]
        listed = verify_chain(events, checkpoints, keys, expected_head=head)
        streamed = verify_chain(
            iter(events), checkpoints, keys, expected_head=head, locate=tx.seq_of_hash
        )
    assert streamed == listed
    assert (not listed.intact) == bool(statements)
    api = verify(chained)  # the endpoint streams from the store, page by page
    assert api["problems"] == listed.problems[:20] and api["summary"] == listed.summary()


def _gauge(api: Api, name: str) -> float | None:
    for line in api.http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_the_background_verifier_raises_the_alarm(
    settings: Settings, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    fast = settings.model_copy(update={"audit_verify_seconds": 0.2})
    with serve(fast, clients, sweep=True) as api:
        for n in range(3):
            assert api.mint(f"stg-{n}").status_code == 201
        deadline = time.monotonic() + 20
        while _gauge(api, "stager_audit_chain_events") != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gauge(api, "stager_audit_chain_events") == 3
        assert _gauge(api, "stager_audit_chain_intact") == 1
        assert (_gauge(api, "stager_audit_chain_verified_timestamp_seconds") or 0) > 0
        tamper(settings, "UPDATE audit_events SET reason='nothing to see' WHERE seq=2")
        while _gauge(api, "stager_audit_chain_intact") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gauge(api, "stager_audit_chain_intact") == 0
    alarms = [r for r in caplog.records if r.getMessage() == "audit chain verification failed"]
    assert alarms and alarms[0].levelname == "ERROR"
    assert "event 2 changed" in alarms[0].first_problem  # type: ignore[attr-defined]


def test_a_truncated_log_stops_the_broker_from_appending(chained: Api, settings: Settings) -> None:
    tamper(settings, "DELETE FROM audit_events WHERE seq > 10")
    r = chained.mint("stg-new")
    assert r.status_code == 503 and "audit log is not intact" in r.json()["detail"]
    with chained.store.transaction(write=False) as tx:
        assert tx.get_staging("stg-new") is None


def test_a_forged_checkpoint_is_named(chained: Api, settings: Settings) -> None:
    with chained.store.transaction() as tx:
        seq, head = tx.audit_head()
        forged = sign_checkpoint(
            ed25519.Ed25519PrivateKey.generate(), "as-forged", seq, str(head), "2026-01-01"
        )
        tx.insert_checkpoint(forged.row())
    report = verify(chained)
    assert "checkpoint 12: signature invalid or by an unknown key (as-forged)" in report["problems"]
    # A checkpoint re-signed with the right kid but another key fails the same way.
    kid = load_keys(settings.keys_dir).audit_kid
    tamper(settings, "DELETE FROM audit_checkpoints WHERE seq=10")
    with chained.store.transaction() as tx:
        forged = sign_checkpoint(ed25519.Ed25519PrivateKey.generate(), kid, 10, "f" * 64, "x")
        tx.insert_checkpoint(forged.row())
    assert any(
        p.startswith("checkpoint 10: signature invalid") for p in verify(chained)["problems"]
    )


def test_rewriting_the_chain_is_caught_by_checkpoints(chained: Api, settings: Settings) -> None:
    """An attacker who recomputes every hash after changing an event still fails a checkpoint."""
    tamper(settings, "UPDATE audit_events SET reason='rewritten' WHERE seq=2")
    prev = GENESIS
    with chained.store.transaction() as tx:
        for record in chained.service.audit.page(0, 1000):
            digest = event_hash(record.body(), prev)
            tx.set_audit_hashes(record.seq, prev, digest)
            prev = digest
    problems = verify(chained)["problems"]
    assert "checkpoint 5: head does not match; events up to 5 were changed" in problems


def test_the_api_filters_and_pages(chained: Api) -> None:
    c = chained.clients
    r = chained.call("GET", "/v1/audit?event=token.redeemed", c.auditor)
    events = r.json()["events"]
    assert [e["staging_guid"] for e in events] == ["stg-0", "stg-1", "stg-2", "stg-3"]
    page1 = chained.call("GET", "/v1/audit?limit=5", c.auditor).json()
    assert [e["seq"] for e in page1["events"]] == [1, 2, 3, 4, 5] and page1["next_after"] == 5
    page3 = chained.call("GET", "/v1/audit?limit=5&after=10", c.auditor).json()
    assert [e["seq"] for e in page3["events"]] == [11, 12] and page3["next_after"] is None
    staging = chained.call("GET", "/v1/audit?staging=stg-1", c.auditor).json()["events"]
    assert [e["event"] for e in staging] == [
        "token.issued",
        "token.redeemed",
        "staging.completed",
        "credentials.purged",
    ]
    assert chained.call("GET", "/v1/audit?since=2000-01-01", c.auditor).json()["events"]
    assert chained.call("GET", "/v1/audit?until=2000-01-01", c.auditor).json()["events"] == []
    assert chained.call("GET", "/v1/audit?since=yesterday", c.auditor).status_code == 422
    assert chained.call("GET", "/v1/audit", c.cc).status_code == 403
    assert chained.http.get("/v1/audit").status_code == 401


# -- the command line, online and offline --------------------------------------------------


def cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`broker audit ARGS` on the in-process broker's database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(
        BROKER_DATABASE_URL=settings.database_url,
        BROKER_KEYS_DIR=str(settings.keys_dir),
        BROKER_PUBLIC_URL=AUD,
    )
    return broker_cli(env, "audit", *args, input=stdin)


def public_key_file(settings: Settings, tmp_path: Path) -> Path:
    key = load_keys(settings.keys_dir).audit_key.public_key()
    path = tmp_path / "audit.pub.pem"
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.slow
def test_cli_list_verify_and_fingerprint(chained: Api, settings: Settings) -> None:
    table = cli(settings, "list", "--event", "token.issued")
    assert table.returncode == 0 and table.stdout.count("token.issued") == 4
    rows = [
        json.loads(line)
        for line in cli(
            settings, "list", "--staging", "stg-0", "--format", "json"
        ).stdout.splitlines()
    ]
    assert [r["event"] for r in rows][:2] == ["token.issued", "token.redeemed"]
    ok = cli(settings, "verify")
    assert ok.returncode == 0 and ok.stdout.startswith(
        "12/12 events valid, 2/2 checkpoints valid, 2 events unsigned (after event 10"
    )
    token = chained.mint("stg-fp").json()["token"]
    fp = cli(settings, "fingerprint", stdin=token + "\n").stdout.strip()
    issued = [
        r
        for r in json.loads(
            "["
            + ",".join(
                cli(settings, "list", "--staging", "stg-fp", "--format", "json").stdout.splitlines()
            )
            + "]"
        )
    ]
    assert issued[0]["token_fp"] == fp and token not in json.dumps(issued)
    tamper(settings, "UPDATE audit_events SET client='mallory' WHERE seq=9")
    bad = cli(settings, "verify")
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0] == (
        "8/13 events valid, 2/2 checkpoints valid, 3 events unsigned (after event 10, the last "
        "a signed checkpoint covers); first problem: event 9 changed "
        "(its content does not match its hash)"
    )


@pytest.fixture
@markers.applies("slow")
def export(chained: Api, settings: Settings, tmp_path: Path) -> tuple[Path, Path]:
    out = cli(settings, "export")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "audit.jsonl"
    path.write_text(out.stdout)
    return path, public_key_file(settings, tmp_path)


def offline(settings: Settings, path: Path, key: Path) -> subprocess.CompletedProcess[str]:
    # No database, no keys folder: only the file and the public key.
    env_settings = settings.model_copy(
        update={"database_url": "sqlite:////nonexistent/x.db", "keys_dir": Path("/nonexistent")}
    )
    return cli(env_settings, "verify", "--file", str(path), "--public-key", str(key))


def edit(path: Path, change) -> Path:
    lines = path.read_text().splitlines()
    changed = change(lines)
    target = path.with_name("tampered.jsonl")
    target.write_text("\n".join(changed) + "\n")
    return target


def _event_line(lines: list[str], seq: int) -> int:
    return next(
        i
        for i, line in enumerate(lines)
        if json.loads(line).get("type") == "event" and json.loads(line)["seq"] == seq
    )


def _set_reason(lines: list[str]) -> list[str]:
    i = _event_line(lines, 4)
    item = json.loads(lines[i])
    item["body"]["reason"] = "forged"
    lines[i] = json.dumps(item)
    return lines


def _swap(lines: list[str]) -> list[str]:
    i, j = _event_line(lines, 4), _event_line(lines, 5)
    lines[i], lines[j] = lines[j], lines[i]
    return lines


def _forge_checkpoint(lines: list[str]) -> list[str]:
    cp = sign_checkpoint(
        ed25519.Ed25519PrivateKey.generate(),
        "as-mallory",
        11,
        "a" * 64,
        "2026-01-01T00:00:00.000+00:00",
    )
    return [*lines, json.dumps({"type": "checkpoint", **cp.row()})]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set_reason, "event 4 changed"),
        (
            lambda ls: [ls[i] for i in range(len(ls)) if i != _event_line(ls, 6)],
            "event 6 missing (between 5 and 7)",
        ),
        (
            lambda ls: [
                x
                for x in ls
                if not (json.loads(x).get("type") == "event" and json.loads(x)["seq"] > 10)
            ],
            "log truncated after event 10: signed checkpoint 12 covers events that are gone",
        ),
        (
            lambda ls: [
                x
                for x in ls
                if not (json.loads(x).get("type") == "event" and json.loads(x)["seq"] > 7)
            ],
            "log truncated after event 7: signed checkpoint 10 covers events that are gone",
        ),
        (_swap, "events reordered: 4 comes after 5"),
        (_forge_checkpoint, "checkpoint 11: signature invalid or by an unknown key (as-mallory)"),
    ],
)
def test_tampering_with_an_export_is_named_offline(
    export: tuple[Path, Path],
    settings: Settings,
    change,
    expected: str,
) -> None:
    path, key = export
    clean = offline(settings, path, key)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("12/12 events valid, 3/3 checkpoints valid")
    result = offline(settings, edit(path, change), key)
    assert result.returncode == 1
    assert expected in result.stdout, result.stdout


@pytest.mark.slow
def test_a_filtered_export_redacts_but_still_verifies(
    chained: Api, settings: Settings, tmp_path: Path
) -> None:
    out = cli(settings, "export", "--staging", "stg-2")
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    events = [x for x in lines if x["type"] == "event"]
    shown = [x for x in events if "body" in x]
    assert {x["body"]["staging_guid"] for x in shown} == {"stg-2"}
    assert any(x.get("redacted") for x in events)
    assert "stg-3" not in out.stdout
    path = tmp_path / "f.jsonl"
    path.write_text(out.stdout)
    result = offline(settings, path, public_key_file(settings, tmp_path))
    assert result.returncode == 0, result.stdout


def test_audit_key_rotation_keeps_old_checkpoints_verifiable(
    settings: Settings, clients: Clients
) -> None:
    s = settings.model_copy(update={"audit_checkpoint_events": 2})
    with serve(s, clients, sweep=False) as api:
        api.mint("a")
    old, new = rotate_audit_key(settings.keys_dir)
    with serve(s, clients, sweep=False) as api:
        api.mint("b")
        kids = {k["kid"] for k in api.http.get("/.well-known/jwks.json").json()["keys"]}
        assert {old, new} <= kids
        report = verify(api)
        with api.store.transaction(write=False) as tx:
            assert {row["kid"] for row in tx.checkpoint_rows()} == {old, new}
    assert report["intact"], report


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.slow  # 300 examples: about 3 s
@given(_json)
@hsettings(max_examples=300)
def test_the_fast_canonical_form_is_the_reference_one(value: object) -> None:
    assert canonical(value) == canonical_reference(value)


_TEXT = st.text(
    # What every store can hold: no lone surrogate (not JSON), no NUL (not PostgreSQL text).
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=40,
)
_minted = iter(range(10**6))


@given(user=_TEXT, username=_TEXT, error=_TEXT)
@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_text_survives_export_and_offline_verification(
    api: Api, tmp_path: Path, user: str, username: str, error: str
) -> None:
    """Text a user or a hostile registry chooses (line and paragraph separators, controls,
    any script) goes through mint, completion, export and offline verification intact."""
    guid = f"u-{next(_minted)}"
    minted = api.mint(guid, user=user, username=username)
    assert minted.status_code == 201 and api.redeem(minted.json()["token"]).status_code == 200
    assert api.complete(guid, "failed", error=error).status_code == 200
    path = tmp_path / f"{guid}.jsonl"
    path.write_text("".join(line + "\n" for line in api.service.audit.export(AuditFilter(), {})))
    report = verify_export_file(path, load_keys(api.service.settings.keys_dir).audit_public)
    assert report.intact, report.problems
    bodies = [b for b in parse_export(path.read_text().split("\n")).events if b.body]
    ours = [e.body for e in bodies if e.body and e.body["staging_guid"] == guid]
    assert ours[0]["registry_username"] == username and ours[0]["detail"]["user"] == user
    assert any(e["detail"].get("error") == error[:500] for e in ours)
