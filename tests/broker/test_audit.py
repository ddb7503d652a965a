"""The audit log as a Merkle tree: canonical form, tamper detection on the stored log and
on exports, online and offline."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from broker.audit import CATALOG, AuditEvent, AuditFilter, Record, events
from broker.audit.canonical import canonical, canonical_reference
from broker.audit.chain import GENESIS, event_hash
from broker.audit.checkpoints import LogIdentity
from broker.audit.export import parse_export, verify_export_file
from broker.audit.leaves import COLUMNS, column_leaf, leaf_data
from broker.audit.merkle import Appender, leaf_hash
from broker.audit.note import Checkpoint, Signer, sign_note
from broker.errors import AuditTampered, ExportError
from broker.keys import load_keys, rotate_audit_key
from broker.settings import Settings
from tests.support import ROOT, markers
from tests.support.brokerapp import AUD, Api, serve
from tests.support.brokerproc import broker_cli
from tests.support.clients import Clients

ORIGIN = "broker.test/audit"


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


def test_a_leaf_covers_every_field_and_its_place() -> None:
    body = {"seq": 1, "at": "t", "event": "token.issued", "detail": {"k": 1}}
    base = leaf_data(body)
    assert base == leaf_data(dict(body)) and b'"prev"' not in base
    for changed in ({"client": "x"}, {"detail": {"k": 2}}, {"seq": 2}, {"at": "u"}):
        assert leaf_data({**body, **changed}) != base
    # An event of the old chain: its leaf is exactly what its chain hash covered.
    assert event_hash(body, GENESIS) == hashlib.sha256(leaf_data(body, GENESIS)).hexdigest()


def test_event_hash_covers_every_field_and_the_link() -> None:
    body = {"seq": 1, "at": "t", "event": "token.issued", "detail": {"k": 1}}
    base = event_hash(body, GENESIS)
    assert base == event_hash(dict(body), GENESIS)
    assert event_hash({**body, "client": "x"}, GENESIS) != base
    assert event_hash({**body, "detail": {"k": 2}}, GENESIS) != base
    assert event_hash(body, "1" * 64) != base


_FIELD_TEXT = st.none() | st.text(max_size=12)  # any script, controls, U+2028 included
_DETAIL = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    ),
    max_size=4,
)


@given(
    seq=st.integers(1, 2**62),
    texts=st.lists(_FIELD_TEXT, min_size=len(COLUMNS) - 2, max_size=len(COLUMNS) - 2),
    detail=_DETAIL,
)
@hsettings(max_examples=300)
def test_a_leaf_made_from_the_stored_columns_is_the_leaf(
    seq: int, texts: list[str | None], detail: dict
) -> None:
    """Full verification makes each leaf straight from the stored columns (the detail as
    the canonical text the store keeps): the same bytes as the leaf of the event."""
    body: dict[str, Any] = dict(zip(COLUMNS, [seq, *texts, detail], strict=True))
    stored = Record(**body).row()  # what the store is given (columns; NULL detail when empty)
    assert stored["detail"] == (canonical(detail).decode() if detail else None)
    row = tuple(stored[name] for name in COLUMNS)
    assert column_leaf(row) == leaf_data(body)


@pytest.fixture
def logged(settings: Settings, clients: Clients) -> Iterator[Api]:
    """12 events, integrated with a checkpoint after 4, 8 and 12: each staging is issued,
    redeemed, then (the first two) completed and purged. Every checkpoint is kept."""
    every = settings.model_copy(update={"audit_checkpoint_keep_seconds": 0})
    with serve(every, clients, sweep=False) as api:
        for n in range(4):
            token = api.mint(f"stg-{n}").json()["token"]
            api.redeem(token)
            if n < 2:
                api.complete(f"stg-{n}", "succeeded")
            if n != 2:
                api.service.audit.integrate()
        yield api


def verify(api: Api) -> dict:
    r = api.call("GET", "/v1/audit/verify", api.clients.auditor)
    assert r.status_code == 200, r.text
    return r.json()


def db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))


def tamper(settings: Settings, *statements: str) -> None:
    conn = db(settings)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def set_columns(settings: Settings, seq: int, **values: str) -> None:
    """Rewrite stored columns of event ``seq`` (names from the test, values bound)."""
    conn = db(settings)
    assigned = ", ".join(f"{name}=?" for name in values)
    conn.execute(f"UPDATE audit_events SET {assigned} WHERE seq=?", (*values.values(), seq))  # noqa: S608
    conn.commit()
    conn.close()


def note_sizes(api: Api) -> list[int]:
    with api.store.transaction(write=False) as tx:
        return [int(r["size"]) for r in tx.note_rows()]


def test_an_untouched_log_verifies(logged: Api) -> None:
    assert note_sizes(logged) == [4, 8, 12]
    report = verify(logged)
    assert report["intact"] and report["summary"] == (
        "12/12 events valid, 3/3 checkpoints valid, 0 events unsigned"
    )


def test_events_no_checkpoint_covers_are_counted_as_unsigned(logged: Api) -> None:
    """Placed in the tree but not signed yet (a checkpoint deleted, or an integration
    without one): said to be, not counted as vouched for."""
    logged.redeem(logged.mint("stg-9").json()["token"])
    logged.service.audit.integrate(sign=False)
    report = logged.service.audit.verify()
    assert report.intact and (report.signed_through, report.events_unsigned) == (12, 2)
    assert report.summary() == (
        "14/14 events valid, 3/3 checkpoints valid, 2 events unsigned "
        "(after event 12, the last a signed checkpoint covers)"
    )


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            ["UPDATE audit_events SET reason='nothing to see' WHERE seq=3"],
            "event 3 changed (its content does not match its hash)",
        ),
        (["DELETE FROM audit_events WHERE seq=7"], "event 7 missing (between 6 and 8)"),
        (
            ["DELETE FROM audit_events WHERE seq > 10"],
            "log truncated after event 10: signed checkpoint 12 covers events that are gone",
        ),
        (
            ["DELETE FROM audit_events WHERE seq >= 7"],
            "log truncated after event 6: signed checkpoint 8 covers events that are gone",
        ),
        (
            [
                "UPDATE audit_events SET seq=-4 WHERE seq=4",
                "UPDATE audit_events SET seq=4 WHERE seq=6",
                "UPDATE audit_events SET seq=6 WHERE seq=-4",
            ],
            "event 4 changed (its content does not match its hash)",
        ),
        (
            # Bytes where text belongs (SQLite keeps whatever it is given).
            ["UPDATE audit_events SET reason=X'00ff' WHERE seq=3"],
            "event 3 changed (its content cannot be read as an event: cannot put a bytes in"
            " the audit log)",
        ),
        (
            # The stored hash of leaves 1-8 (level 3, the first node): the root reads it.
            ["UPDATE audit_tree SET hash=zeroblob(32) WHERE idx=14"],
            "the stored tree does not match the events (the proofs it serves are wrong)",
        ),
    ],
)
def test_tampering_with_the_stored_log_is_named(
    logged: Api, settings: Settings, statements: list[str], expected: str
) -> None:
    tamper(settings, *statements)
    report = verify(logged)
    assert not report["intact"]
    assert expected in report["problems"], report["problems"]
    assert report["problems"][0] in report["summary"]
    direct = logged.service.audit.verify()  # the endpoint says what the log says
    assert report["problems"] == direct.problems[:20] and report["summary"] == direct.summary()


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
        assert _gauge(api, "stager_audit_log_size") == 3
        assert (_gauge(api, "stager_audit_chain_verified_timestamp_seconds") or 0) > 0
        tamper(settings, "UPDATE audit_events SET reason='nothing to see' WHERE seq=2")
        while _gauge(api, "stager_audit_chain_intact") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gauge(api, "stager_audit_chain_intact") == 0
    alarms = [r for r in caplog.records if r.getMessage() == "audit log verification failed"]
    assert alarms and alarms[0].levelname == "ERROR"
    assert "event 2 changed" in alarms[0].first_problem  # type: ignore[attr-defined]


def test_a_cut_log_stops_integration_and_raises_the_alarm(
    logged: Api, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Events cut after the newest checkpoint: the broker adds nothing more to the log
    (requests still record their events, pending) and says why, once, as an ERROR, and in
    its metrics."""
    tamper(settings, "DELETE FROM audit_events WHERE seq > 10")
    assert logged.mint("stg-new").status_code == 201  # its event waits, recorded
    with pytest.raises(AuditTampered, match="log truncated after event 10"):
        logged.service.audit.integrate()
    assert logged.service.audit.halted is not None
    with pytest.raises(AuditTampered):
        logged.service.audit.integrate()
    with logged.store.transaction(write=False) as tx:
        assert tx.log_size() == 10 and tx.pending_count() == 1
    halted = [r for r in caplog.records if r.getMessage() == "audit log integration halted"]
    assert len(halted) == 1 and halted[0].levelname == "ERROR"
    assert _gauge(logged, "stager_audit_integration_halted") == 1
    report = verify(logged)
    assert (
        "log truncated after event 10: signed checkpoint 12 covers events that are gone"
        in (report["problems"])
    )
    # Auditors can still read what the log holds: the alarm is raised, not the reads refused.
    listed = logged.call("GET", "/v1/audit", logged.clients.auditor)
    assert listed.status_code == 200 and len(listed.json()["events"]) == 10


def _note(key: ed25519.Ed25519PrivateKey, size: int, root: bytes, name: str = ORIGIN) -> str:
    return sign_note(Checkpoint(name, size, root).body(), [Signer(name, key)]).decode()


def test_events_stored_before_the_detail_was_canonical_still_verify(
    logged: Api, settings: Settings
) -> None:
    """A broker before this one stored ``detail`` as json.dumps(sort_keys=True) text: such
    rows do not make their leaf from their columns, and are verified through the full
    reading of the event instead, with the same verdicts."""
    conn = db(settings)
    rows = conn.execute("SELECT seq, detail FROM audit_events WHERE detail IS NOT NULL")
    stored = dict(rows.fetchall())
    old = {seq: json.dumps(json.loads(text), sort_keys=True) for seq, text in stored.items()}
    assert len(old) == 4 and all(old[seq] != stored[seq] for seq in old)  # another text
    conn.executemany(
        "UPDATE audit_events SET detail=? WHERE seq=?", [(t, s) for s, t in old.items()]
    )
    conn.commit()
    conn.close()
    report = verify(logged)
    assert report["summary"] == "12/12 events valid, 3/3 checkpoints valid, 0 events unsigned"
    changed = old[5].replace("900", "901")
    assert changed != old[5]
    set_columns(settings, 5, detail=changed)
    problems = verify(logged)["problems"]
    assert problems[:2] == [
        "event 5 changed (its content does not match its hash)",
        "checkpoint 8: root does not match; events up to 8 were changed",
    ], problems


def test_a_changed_detail_with_its_hash_recomputed_fails_the_signed_root(
    logged: Api, settings: Settings
) -> None:
    """The leaf made from the columns is trusted for nothing: a detail rewritten with the
    stored hash recomputed over it fails the checkpoint that covers it."""
    with logged.store.transaction(write=False) as tx:
        (row,) = tx.log_rows(COLUMNS, after=4, limit=1, to_seq=5)
    forged = list(row)
    forged[COLUMNS.index("detail")] = canonical({"forged": True}).decode()
    digest = leaf_hash(column_leaf(forged)).hex()
    set_columns(settings, 5, detail=forged[COLUMNS.index("detail")], hash=digest)
    problems = verify(logged)["problems"]
    assert problems[0] == "checkpoint 8: root does not match; events up to 8 were changed"


def test_a_forged_checkpoint_is_named(logged: Api) -> None:
    with logged.store.transaction() as tx:
        tx.insert_note(
            13, b"\x00" * 32, _note(ed25519.Ed25519PrivateKey.generate(), 13, b"x" * 32), 0
        )
    problems = verify(logged)["problems"]
    assert any(p.startswith("checkpoint: signature invalid or by an unknown key") for p in problems)


def test_rewriting_the_log_is_caught_by_its_checkpoints(logged: Api, settings: Settings) -> None:
    """An attacker who changes an event and recomputes every hash and the whole stored
    tree still fails the signed roots."""
    tamper(
        settings, "UPDATE audit_events SET reason='rewritten' WHERE seq=2", "DELETE FROM audit_tree"
    )
    appender = Appender()
    with logged.store.transaction(write=False) as tx:  # as stored: no integration first
        records = [Record.from_row(r) for r in tx.audit_rows(limit=1000)]
    with logged.store.transaction() as tx:
        hashes: list[bytes] = []
        for record in records:
            leaf = leaf_hash(leaf_data(record.body()))
            hashes += appender.append(leaf)
            tx._cur.execute("UPDATE audit_events SET hash=? WHERE seq=?", (leaf.hex(), record.seq))
        tx.insert_tree_hashes(0, hashes)
    problems = verify(logged)["problems"]
    assert problems == [
        "checkpoint 4: root does not match; events up to 4 were changed",
        "checkpoint 8: root does not match; events up to 8 were changed",
        "the log up to event 12 is not the log this broker integrated",
        "checkpoint 12: root does not match; events up to 12 were changed",
    ]


def test_two_checkpoints_of_one_size_are_a_fork(logged: Api, settings: Settings) -> None:
    key = load_keys(settings.keys_dir).audit_key
    forked = _note(key, 8, b"\x07" * 32)  # the log's own key, another root
    tamper(settings, "DELETE FROM audit_notes WHERE size=8")
    with logged.store.transaction() as tx:
        tx.insert_note(8, b"\x07" * 32, forked, 0)
    problems = verify(logged)["problems"]
    assert "checkpoint 8: root does not match; events up to 8 were changed" in problems


def test_the_api_filters_and_pages(logged: Api) -> None:
    c = logged.clients
    r = logged.call("GET", "/v1/audit?event=token.redeemed", c.auditor)
    events = r.json()["events"]
    assert [e["staging_guid"] for e in events] == ["stg-0", "stg-1", "stg-2", "stg-3"]
    page1 = logged.call("GET", "/v1/audit?limit=5", c.auditor).json()
    assert [e["seq"] for e in page1["events"]] == [1, 2, 3, 4, 5] and page1["next_after"] == 5
    page3 = logged.call("GET", "/v1/audit?limit=5&after=10", c.auditor).json()
    assert [e["seq"] for e in page3["events"]] == [11, 12] and page3["next_after"] is None
    staging = logged.call("GET", "/v1/audit?staging=stg-1", c.auditor).json()["events"]
    assert [e["event"] for e in staging] == [
        "token.issued",
        "token.redeemed",
        "staging.completed",
        "credentials.purged",
    ]
    assert logged.call("GET", "/v1/audit?since=2000-01-01", c.auditor).json()["events"]
    assert logged.call("GET", "/v1/audit?until=2000-01-01", c.auditor).json()["events"] == []
    assert logged.call("GET", "/v1/audit?since=yesterday", c.auditor).status_code == 422
    assert logged.call("GET", "/v1/audit", c.cc).status_code == 403
    assert logged.http.get("/v1/audit").status_code == 401


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
def test_cli_list_verify_and_fingerprint(logged: Api, settings: Settings) -> None:
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
        "12/12 events valid, 3/3 checkpoints valid, 0 events unsigned"
    ), ok.stdout
    vkey = cli(settings, "log-key").stdout.strip()
    assert (
        vkey.startswith(ORIGIN + "+") and vkey == logged.http.get("/v1/audit/log-key").text.strip()
    )
    with_key = cli(settings, "verify", "--log-key", vkey)
    assert with_key.returncode == 0 and with_key.stdout == ok.stdout
    token = logged.mint("stg-fp").json()["token"]
    logged.service.audit.integrate()
    fp = cli(settings, "fingerprint", stdin=token + "\n").stdout.strip()
    issued = [
        json.loads(line)
        for line in cli(
            settings, "list", "--staging", "stg-fp", "--format", "json"
        ).stdout.splitlines()
    ]
    assert issued[0]["token_fp"] == fp and token not in json.dumps(issued)
    tamper(settings, "UPDATE audit_events SET client='mallory' WHERE seq=9")
    bad = cli(settings, "verify")
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0] == (
        "8/13 events valid, 2/4 checkpoints valid, 5 events unsigned (after event 8, the last a"
        " signed checkpoint covers); first problem: event 9 changed (its content does not match"
        " its hash)"
    ), bad.stdout
    wrong = cli(settings, "verify", "--log-key", "not a key")
    assert (
        wrong.returncode != 0 and "bad log key" in wrong.stderr and "Traceback" not in wrong.stderr
    )


@pytest.fixture
@markers.applies("slow")
def export(logged: Api, settings: Settings, tmp_path: Path) -> tuple[Path, str]:
    out = cli(settings, "export")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "audit.jsonl"
    path.write_text(out.stdout)
    return path, cli(settings, "log-key").stdout.strip()


def offline(
    settings: Settings, path: Path, vkey: str, *more: str
) -> subprocess.CompletedProcess[str]:
    # No database, no keys folder: only the file and the log's verifier key.
    env_settings = settings.model_copy(
        update={"database_url": "sqlite:////nonexistent/x.db", "keys_dir": Path("/nonexistent")}
    )
    return cli(env_settings, "verify", "--file", str(path), "--log-key", vkey, *more)


def edit(path: Path, change) -> Path:
    lines = path.read_text().splitlines()
    changed = change(lines)
    target = path.with_name("tampered.jsonl")
    target.write_text("\n".join(changed) + "\n")
    return target


def _version_1(lines: list[str]) -> list[str]:
    return [lines[0].replace('"version": 2', '"version": 1'), *lines[1:]]


def _keys_reordered(lines: list[str]) -> list[str]:
    """The first event written with its keys in another order: not a line the broker
    writes (its lines are told apart by how they begin)."""
    return [lines[0], json.dumps(dict(reversed(json.loads(lines[1]).items()))), *lines[2:]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda lines: [], r"not an audit export \(no header\)"),
        (lambda lines: lines[1:], r"not an audit export \(no header first\)"),
        (_version_1, "an audit export of version 1; this broker reads version 2"),
        (lambda lines: [*lines[:3], "{nope", *lines[3:]], "line 4 is not"),
        (lambda lines: [*lines[:3], lines[0], *lines[3:]], "line 4 is not"),  # a second header
        (_keys_reordered, "line 2 is not an audit export record"),
    ],
)
def test_a_file_that_is_not_an_export_is_named(
    export: tuple[Path, str], settings: Settings, make, message: str
) -> None:
    path, vkey = export
    bad = path.with_name("bad.jsonl")
    bad.write_text("\n".join(make(path.read_text().split("\n"))))
    identity = LogIdentity.from_vkeys([vkey])
    with pytest.raises(ExportError, match=message):
        verify_export_file(bad, identity)


def test_an_export_that_is_not_text_or_not_there_gets_one_line(
    export: tuple[Path, str], settings: Settings
) -> None:
    path, vkey = export
    identity = LogIdentity.from_vkeys([vkey])
    bad = path.with_name("bad.jsonl")
    bad.write_bytes(path.read_bytes() + b"\xff\xfe\n")
    with pytest.raises(ExportError, match="the export is not UTF-8 text"):
        verify_export_file(bad, identity)
    for where, message in (
        (path.with_name("absent.jsonl"), "No such file or directory"),
        (path.parent, "Is a directory"),
        (bad, "is not an audit export"),  # the command reads the header first
    ):
        if where == bad:
            bad.write_bytes(b"\xff\xfe\n")
        out = offline(settings, where, vkey)
        assert out.returncode != 0 and out.stdout == "", out
        assert f"{where}" in out.stderr and message in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


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


def _insert_old(lines: list[str]) -> list[str]:
    """An old event inserted again later (a replayed line)."""
    return [
        *lines[: _event_line(lines, 6) + 1],
        lines[_event_line(lines, 3)],
        *lines[_event_line(lines, 7) :],
    ]


def _forge_checkpoint(lines: list[str]) -> list[str]:
    note = _note(ed25519.Ed25519PrivateKey.generate(), 11, b"a" * 32)
    return [*lines, json.dumps({"type": "checkpoint", "note": note})]


def _drop_events_after(seq: int):
    def change(lines: list[str]) -> list[str]:
        return [
            x
            for x in lines
            if not (json.loads(x).get("type") == "event" and json.loads(x)["seq"] > seq)
        ]

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set_reason, "event 4 changed"),
        (
            lambda ls: [ls[i] for i in range(len(ls)) if i != _event_line(ls, 6)],
            "event 6 missing (between 5 and 7)",
        ),
        (
            _drop_events_after(10),
            "log truncated after event 10: signed checkpoint 12 covers events that are gone",
        ),
        (
            _drop_events_after(7),
            "log truncated after event 7: signed checkpoint 8 covers events that are gone",
        ),
        (_swap, "events reordered: 4 comes after 5"),
        (_insert_old, "events reordered: 3 comes after 6"),
        (_forge_checkpoint, "checkpoint: signature invalid or by an unknown key"),
    ],
)
def test_tampering_with_an_export_is_named_offline(
    export: tuple[Path, str],
    settings: Settings,
    change,
    expected: str,
) -> None:
    path, vkey = export
    clean = offline(settings, path, vkey)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("12/12 events valid, 3/3 checkpoints valid"), clean.stdout
    result = offline(settings, edit(path, change), vkey)
    assert result.returncode == 1
    assert expected in result.stdout, result.stdout


@pytest.mark.slow
def test_a_kept_checkpoint_proves_the_log_only_grew(
    logged: Api, settings: Settings, tmp_path: Path
) -> None:
    """An auditor keeps a checkpoint; later exports must extend it. A log cut back or
    rewritten before it is caught offline, even when the new export is internally
    consistent (re-signed by the operator's own key)."""
    kept = tmp_path / "kept.note"
    kept.write_bytes(logged.http.get("/v1/audit/checkpoint").content)  # size 12
    vkey = logged.http.get("/v1/audit/log-key").text.strip()
    logged.redeem(logged.mint("stg-later").json()["token"])
    later = tmp_path / "later.jsonl"
    later.write_text(cli(settings, "export").stdout)
    ok = offline(settings, later, vkey, "--trusted-checkpoint", str(kept))
    assert ok.returncode == 0, ok.stdout
    assert "+ trusted checkpoint 12: the log only grew since" in ok.stdout, ok.stdout
    assert ok.stdout.rstrip().endswith("the export's first 12 events have its root)")
    # The operator rewrites event 3 and re-signs a whole new history with the log key.
    identity = logged.service.audit.identity
    assert identity is not None
    lines = later.read_text().splitlines()
    events_ = [json.loads(x) for x in lines if json.loads(x)["type"] == "event"]
    events_[2]["body"]["reason"] = "rewritten"
    appender = Appender()
    for e in events_:
        appender.append(leaf_hash(leaf_data(e["body"])))
        e["hash"] = None
    seal = identity.sign(appender.size, appender.root())
    header = json.loads(lines[0])
    forged = [json.dumps(header), *map(json.dumps, events_),
              json.dumps({"type": "checkpoint", "note": seal.note.decode()})]  # fmt: skip
    rewritten = tmp_path / "rewritten.jsonl"
    rewritten.write_text("\n".join(forged) + "\n")
    alone = offline(settings, rewritten, vkey)
    assert alone.returncode == 0, alone.stdout  # consistent on its own
    caught = offline(settings, rewritten, vkey, "--trusted-checkpoint", str(kept))
    assert caught.returncode == 1
    assert "checkpoint 12: root does not match; events up to 12 were changed" in caught.stdout
    # Cut back before the kept checkpoint: named as such.
    cut = edit(later, _drop_events_after(8))
    short = offline(settings, cut, vkey, "--trusted-checkpoint", str(kept))
    assert short.returncode == 1 and "log truncated after event 8" in short.stdout, short.stdout


@pytest.mark.slow
def test_a_filtered_export_proves_its_events_and_shows_no_other(
    logged: Api, settings: Settings, tmp_path: Path
) -> None:
    out = cli(settings, "export", "--staging", "stg-2")
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    events_ = [x for x in lines if x["type"] == "event"]
    assert {x["body"]["staging_guid"] for x in events_} == {"stg-2"} and len(events_) == 2
    assert all(x["proof"] for x in events_)
    assert "stg-3" not in out.stdout and lines[0]["complete"] is False
    path = tmp_path / "f.jsonl"
    path.write_text(out.stdout)
    vkey = cli(settings, "log-key").stdout.strip()
    result = offline(settings, path, vkey)
    assert result.returncode == 0 and result.stdout.startswith("2/2 events valid"), result.stdout
    assert "+ checkpoint 12 (the seal): each of the 2 events is in the log it signed" in (
        result.stdout
    )
    changed = edit(path, lambda ls: [x.replace("stg-2", "stg-7") for x in ls])
    bad = offline(settings, changed, vkey)
    assert bad.returncode == 1 and "is not in the log the seal signs" in bad.stdout
    floated = edit(
        path, lambda ls: [x.replace('"ttl_seconds": ', '"ttl_seconds": 0.5, "was": ') for x in ls]
    )
    odd = offline(settings, floated, vkey)
    assert odd.returncode == 1 and "cannot be read as an event" in odd.stdout, (
        odd.stdout + odd.stderr
    )


def test_audit_key_rotation_keeps_old_checkpoints_verifiable(
    settings: Settings, clients: Clients
) -> None:
    with serve(settings, clients, sweep=False) as api:
        api.mint("a")
        api.service.audit.integrate()
    old, new = rotate_audit_key(settings.keys_dir)
    with serve(settings, clients, sweep=False) as api:
        api.mint("b")
        api.service.audit.integrate()
        kids = {k["kid"] for k in api.http.get("/.well-known/jwks.json").json()["keys"]}
        assert {old, new} <= kids
        vkeys = api.http.get("/v1/audit/log-key").text.split()
        assert len(vkeys) == 2
        report = verify(api)
        identity = LogIdentity.from_vkeys(vkeys)
        with api.store.transaction(write=False) as tx:
            signers = {identity.open(str(r["note"]).encode()).size for r in tx.note_rows()}
        assert signers == {1, 2}
    assert report["intact"] and report["checkpoints_valid"] == 2, report


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
    identity = api.service.audit.identity
    assert identity is not None
    report = verify_export_file(path, identity)
    assert report.intact, report.problems
    bodies = [e for e, _ in parse_export(path.read_text().split("\n")).events]
    ours = [e.body for e in bodies if e.body["staging_guid"] == guid]
    assert ours[0]["registry_username"] == username and ours[0]["detail"]["user"] == user
    assert any(e["detail"].get("error") == error[:500] for e in ours)
