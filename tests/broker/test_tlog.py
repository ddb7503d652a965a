"""The audit log as a transparency log: events become leaves off the request path, the
broker signs C2SP checkpoints, serves proofs, and the Go checksum database's packages
(an implementation nobody here wrote) verify all three."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from broker.audit.leaves import leaf_data
from broker.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from broker.audit.note import parse_checkpoint, parse_note
from broker.settings import Settings
from tests.support.brokerapp import Api, serve
from tests.support.clients import Clients
from tests.support.gotlog import GoTlog


def _hashes(text: str) -> list[bytes]:
    return [base64.b64decode(line) for line in text.splitlines()]


def _stage(api: Api, n: int) -> None:
    token = api.mint(f"stg-{n}").json()["token"]
    assert api.redeem(token).status_code == 200


def test_requests_write_pending_events_the_integrator_places(api_each_store: Api) -> None:
    api = api_each_store
    _stage(api, 0)
    with api.store.transaction(write=False) as tx:
        assert tx.log_size() == 0 and tx.pending_count() == 2  # issued, redeemed
    done = api.service.audit.integrate()
    assert done is not None and (done.size, done.added) == (2, 2) and done.signed is not None
    with api.store.transaction(write=False) as tx:
        assert tx.log_size() == 2 and tx.pending_count() == 0
    assert [r.seq for r in api.service.audit.page(0, 100)] == [1, 2]
    assert api.service.audit.integrate() is not None  # nothing new: no new checkpoint
    with api.store.transaction(write=False) as tx:
        assert [r["size"] for r in tx.note_rows()] == [2]


@pytest.fixture
def keep_all(settings: Settings, clients: Clients, database_url: str) -> Iterator[Api]:
    """As ``api_each_store``, keeping every checkpoint signed."""
    update = {"database_url": database_url, "audit_checkpoint_keep_seconds": 0}
    with serve(settings.model_copy(update=update), clients, sweep=False) as api:
        yield api


def test_go_verifies_checkpoints_and_proofs(keep_all: Api, go_tlog: GoTlog) -> None:
    api = keep_all
    sizes = []
    for n in range(7):
        _stage(api, n)
        api.service.audit.integrate()
        sizes.append(api.service.audit.size())
    vkeys = api.http.get("/v1/audit/log-key")
    assert vkeys.status_code == 200 and vkeys.headers["content-type"].startswith("text/plain")
    vkey = vkeys.text.splitlines()[0]
    note = api.http.get("/v1/audit/checkpoint")
    assert note.status_code == 200
    text = go_tlog.open_note(vkey, note.text)  # Go's note.Open, with our verifier key
    checkpoint = parse_checkpoint(text)
    assert checkpoint.origin == "broker.test/audit" and checkpoint.size == sizes[-1]
    size, root = checkpoint.size, checkpoint.root
    records = api.service.audit.page(0, 1000)
    assert len(records) == size
    for record in records:
        leaf = leaf_hash(leaf_data(record.body()))
        assert go_tlog.record_hash(leaf_data(record.body())) == leaf
        assert record.hash == leaf.hex()
        r = api.http.get(f"/v1/audit/proofs/inclusion?index={record.seq - 1}&size={size}")
        assert r.status_code == 200, r.text
        proof = _hashes(r.text)
        verify_inclusion(record.seq - 1, size, leaf, proof, root)
        assert go_tlog.inclusion_error(record.seq - 1, size, root, leaf, proof) is None
    # Every earlier checkpoint the broker signed is a prefix of the newest one.
    with api.store.transaction(write=False) as tx:
        notes = [(int(r["size"]), bytes(r["root"])) for r in tx.note_rows()]
    assert [s for s, _ in notes] == sizes
    for old, old_root in notes[:-1]:
        r = api.http.get(f"/v1/audit/proofs/consistency?from={old}&to={size}")
        assert r.status_code == 200, r.text
        proof = _hashes(r.text)
        verify_consistency(old, size, old_root, root, proof)
        assert go_tlog.consistency_error(old, size, old_root, root, proof) is None
        assert go_tlog.consistency_error(old, size, old_root, leaf, proof) is not None


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("/v1/audit/proofs/inclusion?index=5&size=5", 422),
        ("/v1/audit/proofs/inclusion?index=0&size=99", 422),
        ("/v1/audit/proofs/inclusion?index=-1&size=2", 422),
        ("/v1/audit/proofs/consistency?from=4&to=2", 422),
        ("/v1/audit/proofs/consistency?from=1&to=99", 422),
        ("/v1/audit/proofs/consistency?to=2", 422),
    ],
)
def test_bad_proof_requests_are_refused(api: Api, query: str, status: int) -> None:
    for n in range(2):
        _stage(api, n)
    api.service.audit.integrate()
    r = api.http.get(query)
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"


def test_an_empty_log_has_no_checkpoint_yet(api: Api) -> None:
    r = api.http.get("/v1/audit/checkpoint")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_the_origin_is_a_setting(settings: Settings) -> None:
    assert settings.model_copy(update={"public_url": "https://s.example/b/"}).log_origin() == (
        "s.example/b/audit"
    )
    assert Settings(audit_origin="logs.example/stager").log_origin() == "logs.example/stager"
    with pytest.raises(ValueError, match="no spaces"):
        Settings(audit_origin="a b")


def test_a_checkpoint_note_is_what_the_spec_says(api: Api) -> None:
    _stage(api, 0)
    api.service.audit.integrate()
    note = api.http.get("/v1/audit/checkpoint").content
    text, signatures = parse_note(note)
    lines = text.split("\n")
    assert lines[0] == "broker.test/audit" and lines[1] == "2" and lines[3] == ""
    assert len(base64.b64decode(lines[2])) == 32
    assert [s.name for s in signatures] == ["broker.test/audit"]
    assert note.decode().count("\n— broker.test/audit ") == 1


def test_a_damaged_stored_tree_serves_no_wrong_proof(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Each proof is checked against the stored leaf and root before it goes out: a stored
    hash changed underneath is a 503 and an ERROR line, never a proof that fails later."""
    import sqlite3

    for n in range(3):
        _stage(api, n)
    api.service.audit.integrate()
    assert api.http.get("/v1/audit/proofs/inclusion?index=1&size=6").status_code == 200
    conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    conn.execute("UPDATE audit_tree SET hash=zeroblob(32) WHERE idx=0")  # leaf 0's hash
    conn.commit()
    conn.close()
    for query in ("inclusion?index=1&size=6", "consistency?from=1&to=6"):
        r = api.http.get(f"/v1/audit/proofs/{query}")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert [r.levelname for r in caplog.records if "wrong proof" in r.getMessage()] == [
        "ERROR",
        "ERROR",
    ]


# -- a log kept as a hash chain (schema version 5) is adopted ------------------------------


def _chain_era_database(
    url: str, reasons: dict[int, str] | None = None, then: str | None = None
) -> list[str]:
    """A database as a version-5 broker left it: 7 chained events. Returns their hashes.
    ``reasons`` rewrites events after they were hashed, ``then`` is run last (a broken
    chain)."""
    import sqlite3

    import psycopg

    from broker.audit.chain import GENESIS, event_hash
    from broker.store.sql import statements
    from broker.store.sqlite import _portable

    sqlite = url.startswith("sqlite")
    conn: Any = sqlite3.connect(url.removeprefix("sqlite:///")) if sqlite else psycopg.connect(url)
    mark = "?" if sqlite else "%s"
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version in range(1, 6):
        for statement in statements(version, "sqlite" if sqlite else "postgresql"):
            conn.execute(_portable(statement) if sqlite else statement)
        conn.execute(f"INSERT INTO schema_version (version) VALUES ({mark})", (version,))  # noqa: S608
    prev, hashes = GENESIS, []
    for seq in range(1, 8):
        at = f"2026-11-0{seq}T00:00:00.000+00:00"
        body = {"seq": seq, "at": at, "event": "token.issued", "client": "cc",
                "staging_guid": f"old-{seq}", "detail": {"ttl_seconds": 60}}  # fmt: skip
        digest = event_hash(body, prev)
        row = {**body, "detail": json.dumps(body["detail"]), "prev_hash": prev, "hash": digest}
        row["reason"] = (reasons or {}).get(seq)
        columns, marks = ", ".join(row), ", ".join([mark] * len(row))
        conn.execute(f"INSERT INTO audit_events ({columns}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
        prev = digest
        hashes.append(digest)
    if then is not None:
        conn.execute(then)
    conn.commit()
    conn.close()
    return hashes


def test_a_hash_chain_is_verified_and_adopted_as_the_first_leaves(
    settings: Settings, database_url: str, go_tlog: GoTlog
) -> None:
    from broker.service import open_service

    hashes = _chain_era_database(database_url)
    service = open_service(settings.model_copy(update={"database_url": database_url}))
    try:
        records = service.audit.page(0, 100)
        assert [r.seq for r in records] == list(range(1, 9))
        assert [r.hash for r in records[:7]] == hashes  # the chain's hashes, kept
        assert [r.staging_guid for r in records[:7]] == [f"old-{n}" for n in range(1, 8)]
        migrated = records[7]
        assert migrated.event == "audit.migrated"
        assert migrated.detail == {"chain_head": hashes[-1], "chain_events": 7}
        report = service.audit.verify()
        assert report.intact and report.summary().startswith("8/8 events valid"), report.problems
        latest = service.audit.latest()
        assert latest is not None and latest.size == 8
        identity = service.audit.identity
        assert identity is not None
        assert go_tlog.open_note(identity.vkeys()[0], latest.note)
        # The chain's events are leaves like any other: Go checks their inclusion.
        for record in records:
            leaf = leaf_hash(leaf_data(record.body(), record.prev_hash))
            proof = service.audit.inclusion(record.seq - 1, 8)
            assert go_tlog.inclusion_error(record.seq - 1, 8, latest.root, leaf, proof) is None
        assert service.audit.upgrade() == 0  # once
    finally:
        service.close()


@pytest.mark.parametrize(
    ("reasons", "then", "problem"),
    [
        ({3: "rewritten after it was hashed"}, None, "event 3 changed"),
        ({}, "DELETE FROM audit_events WHERE seq=4", "event 5 follows event 3"),
        (
            {},
            "UPDATE audit_events SET prev_hash='" + "1" * 64 + "' WHERE seq=4",
            "event 4: link to event 3 broken",
        ),
        ({}, "DELETE FROM audit_events WHERE seq=1", "event 2: the chain does not start"),
    ],
)
def test_a_broken_chain_is_not_adopted(
    settings: Settings,
    database_url: str,
    reasons: dict[int, str],
    then: str | None,
    problem: str,
) -> None:
    from broker.errors import AuditTampered
    from broker.service import open_service

    _chain_era_database(database_url, reasons, then)
    with pytest.raises(AuditTampered, match=rf"does not verify.*{problem}"):
        open_service(settings.model_copy(update={"database_url": database_url}))


def test_the_store_keeps_one_checkpoint_an_hour_and_the_newest(api: Api) -> None:
    """Each checkpoint covers every event before it: the store keeps the first, one per
    BROKER_AUDIT_CHECKPOINT_KEEP_SECONDS and the newest, not one per second."""
    import functools

    from broker.audit import events

    start = api.service.clock()
    for minute in range(0, 150, 10):  # a checkpoint every 10 minutes for 2.5 hours
        api.service.clock = functools.partial(float.__add__, start + 60.0 * minute, 0.0)
        with api.store.transaction() as tx:
            writer = api.service.audit.writer(tx)
            writer.append(events.CLIENT_ADDED(client=f"c-{minute}", detail={"role": "cc"}))
            writer.append(events.CLIENT_REMOVED(client=f"c-{minute}"))
        api.service.audit.integrate()
    with api.store.transaction(write=False) as tx:
        kept = [(int(r["size"]), int(r["signed_at"]) - int(start)) for r in tx.note_rows()]
    assert [at for _, at in kept] == [0, 3600, 7200, 8400], kept
    assert kept[-1][0] == api.service.audit.size() == 30
    assert api.service.audit.verify().intact


def test_two_brokers_on_postgresql_write_one_tree(
    settings: Settings, pg_schema_url: str, go_tlog: GoTlog
) -> None:
    """Two replicas write events and integrate at once, with no lock on the request path:
    one tree, every event in it once, in one gap-free sequence, proofs Go accepts."""
    import functools

    from broker.audit import events
    from broker.service import open_service
    from tests.support.concurrency import together

    s = settings.model_copy(
        update={"database_url": pg_schema_url, "audit_checkpoint_keep_seconds": 0}
    )
    replicas = [open_service(s), open_service(s)]
    try:

        def work(replica: int, worker: int) -> int:
            service = replicas[replica]
            for n in range(40):
                with service._store.transaction() as tx:
                    service.audit.writer(tx).append(
                        events.TOKEN_LOOKUP(
                            client=f"r{replica}", staging_guid=f"{replica}-{worker}-{n}"
                        )
                    )
                if n % 7 == 0:
                    service.audit.integrate()
            return 40

        calls = [functools.partial(work, r, w) for w in range(4) for r in (0, 1)]
        assert sum(together(calls)) == 320
        replicas[0].audit.integrate()
        records = replicas[1].audit.page(0, 1000)
        assert [r.seq for r in records] == list(range(1, 321))
        assert len({r.staging_guid for r in records}) == 320  # each event once
        report = replicas[0].audit.verify()
        assert report.intact and report.events_total == 320, report.problems
        latest = replicas[1].audit.latest()
        identity = replicas[1].audit.identity
        assert latest is not None and identity is not None and latest.size == 320
        go_tlog.open_note(identity.vkeys()[0], latest.note)
        for record in records[::37]:
            leaf = leaf_hash(leaf_data(record.body()))
            proof = replicas[record.seq % 2].audit.inclusion(record.seq - 1, 320)
            assert go_tlog.inclusion_error(record.seq - 1, 320, latest.root, leaf, proof) is None
    finally:
        for replica in replicas:
            replica.close()
