"""The store suite, run against SQLite and a real PostgreSQL alike."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from broker.audit import AuditEvent, AuditLog
from broker.errors import OutcomeUnknown, StoreError
from broker.keys import load_keys
from broker.store import Store, open_store
from broker.store.model import ClientRow, StagingRow
from broker.store.sql import MIGRATIONS
from tests.support.concurrency import together
from tests.support.pgproxy import pg_proxy

NOW = int(time.time())
ROW = StagingRow(
    staging_guid="s1",
    app_guid="a1",
    space_guid="sp",
    pushed_by="dev@example",
    image="r/i:1",
    registry="r",
    registry_username="alice",
    tailor="t1",
    cc_client="cc",
    token_id="tid",
    token_fp="hmac-sha256:x",
    state="open",
    created_at=NOW,
    expires_at=NOW + 900,
    redeemed_at=None,
    closed_at=None,
    result=None,
)
TAILOR = ClientRow("t1", "tailor", "PEM", NOW)


def test_migrate_is_idempotent(store: Store) -> None:
    assert store.migrate() == store.migrate() == len(MIGRATIONS)


def test_clients(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.add_client(ClientRow("c1", "cc", "PEM", NOW))
        assert not tx.add_client(ClientRow("c1", "tailor", "PEM2", NOW))
        assert tx.add_client(ClientRow("a0", "auditor", "PEM3", NOW))
    with store.transaction() as tx:
        assert [c.name for c in tx.list_clients()] == ["a0", "c1"]
        assert tx.get_client("c1") == ClientRow("c1", "cc", "PEM", NOW)
        assert tx.remove_client("c1") and not tx.remove_client("c1")
        assert tx.get_client("c1") is None


def test_assertion_ids_are_single_use(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.use_assertion("c", "j1", NOW + 60)
        assert not tx.use_assertion("c", "j1", NOW + 60)
        assert tx.use_assertion("other", "j1", NOW + 60)
        assert tx.forget_assertions(NOW + 61) == 2
        assert tx.use_assertion("c", "j1", NOW + 60)


def test_staging_life(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_client(TAILOR)  # the staging rows are bound to it
        assert tx.insert_staging(ROW)
        assert not tx.insert_staging(ROW)
        tx.put_sealed("s1", b"\x00sealed\xff")
    with store.transaction() as tx:
        assert tx.get_staging("s1") == ROW
        assert tx.get_sealed("s1") == b"\x00sealed\xff"
        assert not tx.redeem("s1", "other-token", "t1", NOW)
        assert not tx.redeem("s1", "tid", "t2", NOW)
        assert not tx.redeem("s1", "tid", "t1", NOW + 900)  # expired
        won = tx.redeem("s1", "tid", "t1", NOW)
        assert won == (replace(ROW, state="redeemed", redeemed_at=NOW), b"\x00sealed\xff")
        assert not tx.redeem("s1", "tid", "t1", NOW)
        assert tx.close_staging("s1", ("open", "redeemed"), "completed", NOW, '{"ok": 1}')
        assert not tx.close_staging("s1", ("open", "redeemed"), "cancelled", NOW, None)
        assert tx.delete_sealed("s1") and not tx.delete_sealed("s1")
        final = tx.get_staging("s1")
    assert final is not None and final.state == "completed" and final.redeemed_at == NOW


def test_a_staging_is_bound_to_a_registered_tailor_only(store: Store) -> None:
    """The insert checks the bound tailor in the same statement: a name no client has, or a
    client of another role, inserts nothing."""
    with store.transaction() as tx:
        tx.add_client(ClientRow("c1", "cc", "PEM", NOW))
        assert not tx.insert_staging(ROW)  # no client t1
        assert not tx.insert_staging(replace(ROW, tailor="c1"))  # c1 is a cc
        tx.add_client(TAILOR)
        assert tx.insert_staging(ROW)
        assert tx.get_staging("s1") == ROW


def test_a_redemption_of_purged_credentials_says_so(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_client(TAILOR)
        tx.insert_staging(ROW)
    with store.transaction() as tx:
        assert tx.redeem("s1", "tid", "t1", NOW) == (
            replace(ROW, state="redeemed", redeemed_at=NOW),
            None,
        )


def test_expired_stagings_are_found(store: Store) -> None:
    with store.transaction() as tx:
        tx.add_client(TAILOR)  # the staging rows are bound to it
        tx.insert_staging(ROW)
        tx.insert_staging(replace(ROW, staging_guid="s2", expires_at=NOW + 10))
        tx.insert_staging(replace(ROW, staging_guid="s3", expires_at=NOW + 5, state="cancelled"))
    with store.transaction() as tx:
        assert [s.staging_guid for s in tx.expired_stagings(NOW + 20)] == ["s2"]


def closed(guid: str, state: str, closed_at: int) -> StagingRow:
    return replace(ROW, staging_guid=guid, state=state, closed_at=closed_at)  # type: ignore[arg-type]


def test_only_closed_stagings_with_their_repository_gone_are_forgotten(store: Store) -> None:
    """Prune's mark goes on closed stagings only, once; retention deletes marked rows closed
    before its cut-off, oldest first, at most as many as asked."""
    with store.transaction() as tx:
        tx.add_client(TAILOR)  # the staging rows are bound to it
        for row in [
            replace(ROW, staging_guid="open"),
            replace(ROW, staging_guid="redeemed", state="redeemed", redeemed_at=NOW),
            closed("old-1", "completed", NOW - 300),
            closed("old-2", "expired", NOW - 200),
            closed("unmarked", "failed", NOW - 400),  # the oldest, but prune never said
            closed("young", "cancelled", NOW - 10),
        ]:
            tx.insert_staging(row)
    with store.transaction() as tx:
        marking = ["open", "redeemed", "old-1", "old-2", "young", "nobody"]
        assert tx.mark_repositories_gone(marking, NOW - 100) == 3
        assert tx.mark_repositories_gone(["old-1"], NOW) == 0  # a mark is never moved
    with store.transaction() as tx:
        marks = {s.staging_guid: s.repository_gone_at for s in tx.all_stagings()}
        assert marks == {
            "open": None,
            "redeemed": None,
            "old-1": NOW - 100,
            "old-2": NOW - 100,
            "unmarked": None,
            "young": NOW - 100,
        }
        assert tx.retention_counts(NOW - 100) == (4, 3, 2)
    with store.transaction() as tx:
        assert tx.forget_stagings(NOW - 100, 1) == [("old-1", NOW - 300)]
    with store.transaction() as tx:
        assert tx.forget_stagings(NOW - 100, 10) == [("old-2", NOW - 200)]
        assert tx.forget_stagings(NOW - 100, 10) == []
        assert [s.staging_guid for s in tx.all_stagings()] == [
            "open",
            "redeemed",
            "unmarked",
            "young",
        ]


def test_replicas_forgetting_at_once_forget_each_row_once(database_url: str) -> None:
    """Two stores (two replicas) run retention at once: every row goes, reported by one."""
    a, b = open_store(database_url), open_store(database_url)
    a.migrate()
    try:
        guids = [f"gone-{n:03}" for n in range(60)]
        with a.transaction() as tx:
            tx.add_client(TAILOR)  # the staging rows are bound to it
            for n, guid in enumerate(guids):
                tx.insert_staging(closed(guid, "completed", NOW - 1000 + n))
            tx.mark_repositories_gone(guids, NOW - 500)

        def forget(store: Store) -> list[str]:
            out: list[str] = []
            while True:
                with store.transaction() as tx:
                    batch = tx.forget_stagings(NOW, 7)
                if not batch:
                    return out
                out += [guid for guid, _ in batch]

        got = together([functools.partial(forget, s) for s in (a, b, a, b)])
        assert sorted(guid for each in got for guid in each) == guids
        with a.transaction() as tx:
            assert tx.all_stagings() == []
    finally:
        a.close()
        b.close()


@pytest.fixture
def audit(store: Store, keys_dir: Path) -> AuditLog:
    return AuditLog(store, load_keys(keys_dir), origin="broker.test/audit")


def test_audit_sequence_and_detail(store: Store, audit: AuditLog) -> None:
    with store.transaction() as tx:
        writer = audit.writer(tx)
        writer.append(AuditEvent("token.issued", client="cc", detail={"k": 1}))
        writer.append(AuditEvent("token.refused", reason="tampered"))
    rows = audit.page(0, 10)  # a read integrates first: the events have their places
    assert [(r.seq, r.event, r.reason) for r in rows] == [
        (1, "token.issued", None),
        (2, "token.refused", "tampered"),
    ]
    assert rows[0].detail == {"k": 1}
    assert rows[0].prev_hash is None and rows[0].hash != rows[1].hash
    assert len(str(rows[0].hash)) == 64


def test_a_failed_transaction_leaves_nothing(store: Store, audit: AuditLog) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.add_client(TAILOR)  # the staging rows are bound to it
        tx.insert_staging(ROW)
        audit.writer(tx).append(AuditEvent("token.issued"))
        raise RuntimeError("boom")
    with store.transaction() as tx:
        assert tx.get_staging("s1") is None
    assert audit.page(0, 10) == []


def test_concurrent_redemptions_one_wins(database_url: str) -> None:
    """Two stores (as two replicas would have) race to redeem one staging, many times."""
    a, b = open_store(database_url), open_store(database_url)
    a.migrate()
    try:
        for n in range(20):
            guid = f"race-{n}"
            with a.transaction() as tx:
                tx.add_client(TAILOR)  # the staging rows are bound to it
                tx.insert_staging(replace(ROW, staging_guid=guid))

            def redeem(store: Store, guid: str = guid) -> bool:
                with store.transaction() as tx:
                    return tx.redeem(guid, "tid", "t1", NOW) is not None

            wins = together([functools.partial(redeem, s) for s in (a, b, a, b)])
            assert sorted(wins) == [False, False, False, True]
    finally:
        a.close()
        b.close()


def test_audit_failure_means_the_action_does_not_happen(
    database_url: str, store: Store, audit: AuditLog
) -> None:
    """Fail closed: a database that refuses the audit row refuses the action with it."""
    with store.transaction() as tx:
        cur = tx._cur
        if database_url.startswith("sqlite"):
            cur.execute(
                "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events"
                " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
            )
        else:
            cur.execute(
                "CREATE FUNCTION no_audit() RETURNS trigger AS $$ BEGIN"
                " RAISE EXCEPTION 'audit disk full'; END $$ LANGUAGE plpgsql"
            )
            cur.execute(
                "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events"
                " FOR EACH ROW EXECUTE FUNCTION no_audit()"
            )
    with pytest.raises(StoreError), store.transaction() as tx:
        tx.add_client(TAILOR)  # the staging rows are bound to it
        tx.insert_staging(ROW)
        tx.put_sealed("s1", b"x")
        audit.writer(tx).append(AuditEvent("token.issued"))
    with store.transaction() as tx:
        assert tx.get_staging("s1") is None and tx.get_sealed("s1") is None


def _staged(store: Store, guid: str) -> bool:
    with store.transaction() as tx:
        return tx.get_staging(guid) is not None


def test_a_postgresql_commit_whose_answer_is_lost_is_outcome_unknown(pg_schema_url: str) -> None:
    """PostgreSQL commits, the connection drops before its answer comes back: the store
    must not say the transaction was rolled back (it was not), and the pool goes on."""
    with pg_proxy(pg_schema_url) as proxy:
        store = open_store(proxy.url)
        try:
            store.migrate()
            proxy.arm("INSERT INTO stagings")
            with pytest.raises(OutcomeUnknown, match="may have been done"):
                with store.transaction() as tx:
                    tx.add_client(TAILOR)  # the staging rows are bound to it
                    tx.insert_staging(ROW)
            assert proxy.withheld == [["C COMMIT"]]  # PostgreSQL did commit
            assert _staged(store, "s1")  # and a new connection of the pool sees it
            with store.transaction() as tx:
                tx.add_client(TAILOR)  # the staging rows are bound to it
                tx.insert_staging(replace(ROW, staging_guid="s2"))
            assert _staged(store, "s2")
        finally:
            store.close()


def test_a_postgresql_failure_before_commit_is_a_plain_store_error(pg_schema_url: str) -> None:
    """The connection drops before COMMIT is sent (on the statement itself), or
    PostgreSQL answers the COMMIT with an error: rolled back, nothing was done."""
    with pg_proxy(pg_schema_url) as proxy:
        store = open_store(proxy.url)
        try:
            store.migrate()
            proxy.arm("INSERT INTO stagings", cut="statement")
            with pytest.raises(StoreError) as lost, store.transaction() as tx:
                tx.add_client(TAILOR)  # the staging rows are bound to it
                tx.insert_staging(ROW)
            assert not isinstance(lost.value, OutcomeUnknown) and proxy.cut.is_set()
            assert not _staged(store, "s1")
            with pytest.raises(StoreError) as refused, store.transaction() as tx:
                tx.add_client(TAILOR)  # the staging rows are bound to it
                tx.insert_staging(ROW)
                # A deferred constraint is checked at COMMIT, which PostgreSQL refuses.
                tx._cur.execute(
                    "CREATE TEMP TABLE once (n INT UNIQUE DEFERRABLE INITIALLY DEFERRED)"
                )
                tx._cur.execute("INSERT INTO once VALUES (1), (1)")
            assert not isinstance(refused.value, OutcomeUnknown)
            assert not _staged(store, "s1")
        finally:
            store.close()


def test_bad_urls() -> None:
    with pytest.raises(StoreError, match="must start with"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://nobody:pw@127.0.0.1:1/none?connect_timeout=1")


def test_sqlite_checkpoints_in_the_background(tmp_path) -> None:
    import shutil
    import sqlite3

    path = tmp_path / "b.sqlite"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    with store.transaction() as tx:
        tx.add_client(ClientRow("late", "cc", "PEM", NOW))
    # Far below SQLite's own checkpoint threshold: only the background thread moves the
    # row from the WAL into the database file itself. Copy the file alone and look.
    deadline = time.monotonic() + 10
    found: list[tuple[str]] = []
    while not found and time.monotonic() < deadline:
        time.sleep(0.05)
        shutil.copyfile(path, tmp_path / "alone.sqlite")
        conn = sqlite3.connect(tmp_path / "alone.sqlite")
        try:
            found = conn.execute("SELECT name FROM clients WHERE name = 'late'").fetchall()
        except sqlite3.Error:
            found = []
        finally:
            conn.close()
    assert found == [("late",)]
    threads = [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]
    assert threads
    store.close()
    assert not any(t.is_alive() for t in threads)


def test_shredded_credentials_leave_the_sqlite_files(tmp_path: Path) -> None:
    """A closed staging's sealed credentials are gone from the database file and the WAL,
    not only from the table (a copy of the files must not hold them), and the files are
    the broker's alone (0600)."""
    path = tmp_path / "shred.sqlite"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    sealed = b"SEALED-" + bytes(range(256)) * 4  # recognisable, and incompressible enough
    try:
        with store.transaction() as tx:
            tx.add_client(TAILOR)  # the staging rows are bound to it
            tx.insert_staging(ROW)
            tx.put_sealed("s1", sealed)
        with store.transaction() as tx:
            assert tx.delete_sealed("s1")
        files = [p for p in tmp_path.iterdir() if p.name.startswith("shred.sqlite")]
        assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}, files
        deadline = time.monotonic() + 10
        holding = files
        while holding and time.monotonic() < deadline:
            time.sleep(0.05)
            holding = [p for p in tmp_path.iterdir() if p.exists() and sealed in p.read_bytes()]
        assert holding == [], holding
    finally:
        store.close()


def test_an_idle_sqlite_wal_is_emptied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen: under steady load the WAL sat at its 64 MiB backstop and never shrank (a
    PASSIVE checkpoint reuses the file, it does not shorten it). Once writes stop for
    ``_IDLE_TRUNCATE`` seconds, the background thread empties it."""
    import broker.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "_IDLE_TRUNCATE", 0.5, raising=False)
    path = tmp_path / "b.sqlite"
    wal = Path(f"{path}-wal")
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    try:
        for n in range(200):  # a few MiB of WAL, written as a busy broker would
            with store.transaction() as tx:
                tx.add_client(ClientRow(f"c{n}", "cc", "P" * 16_000, NOW))
        assert wal.stat().st_size > 1_000_000
        deadline = time.monotonic() + 10
        while wal.stat().st_size > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wal.stat().st_size == 0, "the WAL kept its size while the broker was idle"
        with store.transaction(write=False) as tx:
            assert len(tx.list_clients()) == 200  # nothing lost on the way
    finally:
        store.close()


def test_a_write_waits_for_one_integration_batch_not_all(store: Store, audit: AuditLog) -> None:
    """The integrator places a backlog in batches, each its own transaction, and lets a
    waiting writer in between: a writer during the integration of 5,000 events sees the
    log part-way (on SQLite the integrator's transaction holds the one write lock, so with
    one transaction for all a writer saw none placed or all)."""
    events = 5000
    with store.transaction() as tx:
        writer = audit.writer(tx)
        for n in range(events):
            writer.append(AuditEvent("registry.token", client="cells", detail={"n": n}))
    seen: list[int] = []
    done = threading.Event()

    def integrate() -> None:
        try:
            audit.integrate()
        finally:
            done.set()

    thread = threading.Thread(target=integrate)
    thread.start()
    while not done.is_set() and len(seen) < 10_000:  # bounded
        with store.transaction() as tx:  # a write transaction: the lock a request takes
            seen.append(tx.log_size())
    thread.join(timeout=60)
    assert not thread.is_alive()
    with store.transaction(write=False) as tx:
        final = tx.log_size()
    assert final >= events
    assert any(0 < size < final for size in seen), sorted(set(seen))
