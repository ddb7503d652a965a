"""A store filled as a long-running broker's would be, fast: ``bench.broker --preload``.

``preload(url, keys_dir, origin, events=..., stagings=...)`` writes ``stagings`` closed
stagings (completed, credentials shredded, over the last 30 days) with their audit
history (token.issued, token.redeemed, staging.completed, credentials.purged) and
registry-token grants up to ``events`` audit events, every one integrated into the log:
the Merkle tree's stored hashes and a signed checkpoint over them, as the broker's
integrator leaves them (broker/audit/integrator.py). Events are built through the
catalog and the audit log's own row format; the rows then go in by bulk SQL (one
``executemany`` transaction on SQLite, ``COPY`` on PostgreSQL) rather than through the
integrator's transactions of 5,000, which would take minutes on PostgreSQL. A broker
started on the store afterwards checks the tree against the checkpoint before it adds
anything (a preload that got the leaves wrong stops its integrator, and this bench).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

from broker.audit import AuditLog, events
from broker.audit.integrator import _body  # the leaf's body, exactly as the integrator makes it
from broker.audit.leaves import leaf_data
from broker.audit.merkle import Appender, leaf_hash, stored_count
from broker.keys import load_keys
from broker.store import open_store

__all__ = ["preload"]

EVENT_COLUMNS = (
    "id", "seq", "at", "event", "client", "app_guid", "staging_guid", "image", "registry",
    "registry_username", "token_fp", "reason", "detail", "prev_hash", "hash",
)  # fmt: skip
STAGING_COLUMNS = (
    "staging_guid", "app_guid", "space_guid", "pushed_by", "image", "registry",
    "registry_username", "tailor", "cc_client", "token_id", "token_fp", "state", "created_at",
    "expires_at", "redeemed_at", "closed_at", "result", "repository_gone_at",
)  # fmt: skip
HISTORY = 4  # events per staging


class _Rows:
    """Stands for a transaction: collects the rows ``AuditLog`` would insert."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def insert_audit(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))


def _history(n: int, start: float) -> tuple[tuple[Any, ...], list[events.AuditEvent]]:
    """Staging ``n``: its closed row, and its four events."""
    guid = f"pre-{n:07d}"
    app = f"app-{n % 5000}"
    created = int(start) + n * 25  # 100,000 of them over about 30 days
    fp = secrets.token_hex(16)
    image = f"registry.bench/team-{n % 300}/app:{n % 7}"
    result = json.dumps({"docker_image": f"internal.bench/staging/{app}/{guid}@sha256:" + "a" * 64})
    row = (
        guid, app, None, "dev@bench", image, "registry.bench", "u", "tailor", "cc",
        secrets.token_hex(8), fp, "completed", created, created + 900, created + 5,
        created + 60, result, None,
    )  # fmt: skip
    about = dict(
        app_guid=app, staging_guid=guid, image=image, registry="registry.bench",
        registry_username="u", token_fp=fp,
    )  # fmt: skip
    history = [
        events.TOKEN_ISSUED(client="cc", detail={"ttl_seconds": 900, "tailor": "tailor"}, **about),
        events.TOKEN_REDEEMED(client="tailor", **about),
        events.STAGING_COMPLETED(client="tailor", **about),
        events.CREDENTIALS_PURGED(client="tailor", **about),
    ]
    return row, history


def _events(total: int, stagings: int, start: float) -> Iterator[events.AuditEvent | tuple]:
    """The stagings' histories interleaved with registry-token grants, ``total`` events in
    all; a staging's row is yielded (a tuple) before its events."""
    grants = max(0, total - HISTORY * stagings)
    every = grants / stagings if stagings else 0.0
    done = 0.0
    for n in range(stagings):
        row, history = _history(n, start)
        yield row
        yield from history
        done += every
        while done >= 1:
            done -= 1
            grants -= 1
            yield _grant(n)
    for n in range(grants):
        yield _grant(n)


def _grant(n: int) -> events.AuditEvent:
    granted = [f"repository:staging/app-{n % 5000}/pre-{n % 100000:07d}:pull"]
    return events.REGISTRY_TOKEN(client="cells", detail={"granted": granted})


def preload(url: str, keys_dir: Any, origin: str, *, events_total: int, stagings: int) -> float:
    """Fill the (migrated, otherwise empty) store at ``url``; the seconds it took."""
    began = time.perf_counter()
    start = time.time() - 31 * 86400
    keys = load_keys(keys_dir)
    store = open_store(url)
    clock = [start]
    audit = AuditLog(store, keys, origin=origin, clock=lambda: clock[0])
    identity = audit.identity
    assert identity is not None
    try:
        audit.integrate()  # what came before (client.added): the preload follows it
        with store.transaction(write=False) as tx:
            first = tx.log_size()
            base = int((tx._one("SELECT COALESCE(MAX(id), 0) FROM audit_events") or (0,))[0])
        assert first == 0 or first == base, "preload a store whose events are all integrated"
        appender = Appender.at(first, lambda idx: _tree_hashes(store, idx))
        collector = _Rows()
        next_idx = stored_count(first)
        staging_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        tree: list[tuple[int, bytes]] = []
        for item in _events(events_total, stagings, start):
            if isinstance(item, tuple):
                staging_rows.append(item)
                clock[0] = item[12]  # its created_at: the events follow it
                continue
            clock[0] += 0.001
            audit.writer(collector).append(item)  # type: ignore[arg-type]
            row = collector.rows.pop()
            seq = appender.size + 1
            leaf = leaf_hash(leaf_data(_body(row, seq), None))
            for h in appender.append(leaf):
                tree.append((next_idx, h))
                next_idx += 1
            row.update(id=base + seq - first, seq=seq, hash=leaf.hex(), prev_hash=None)
            event_rows.append(tuple(row.get(c) for c in EVENT_COLUMNS))
        signed = identity.sign(appender.size, appender.root())
        if url.startswith("sqlite:///"):
            _sqlite(url, staging_rows, event_rows, tree)
        else:
            _postgres(url, staging_rows, event_rows, tree)
        with store.transaction() as tx:
            tx.insert_note(signed.size, signed.root, signed.note.decode(), int(time.time()))
        # What a broker does first: the stored tree against the checkpoint (AuditTampered if
        # the preload got it wrong), and nothing left pending.
        done = AuditLog(store, keys, origin=origin).integrate()
        assert done is not None and done.size == appender.size and done.added == 0, done
    finally:
        store.close()
    return time.perf_counter() - began


def _tree_hashes(store: Any, indexes: Any) -> list[bytes]:
    with store.transaction(write=False) as tx:
        return list(tx.tree_hashes(indexes))


def _insert(table: str, columns: tuple[str, ...]) -> str:
    """The INSERT of these constant names (never input)."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"  # noqa: S608


def _sqlite(
    url: str,
    staging_rows: list[tuple[Any, ...]],
    event_rows: list[tuple[Any, ...]],
    tree: list[tuple[int, bytes]],
) -> None:
    import sqlite3

    conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_insert("stagings", STAGING_COLUMNS), staging_rows)
        conn.executemany(_insert("audit_events", EVENT_COLUMNS), event_rows)
        conn.executemany("INSERT INTO audit_tree (idx, hash) VALUES (?, ?)", tree)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _postgres(
    url: str,
    staging_rows: list[tuple[Any, ...]],
    event_rows: list[tuple[Any, ...]],
    tree: list[tuple[int, bytes]],
) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            for table, columns, rows in (
                ("stagings", STAGING_COLUMNS, staging_rows),
                ("audit_events", EVENT_COLUMNS, event_rows),
                ("audit_tree", ("idx", "hash"), tree),
            ):
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), MAX(id))"
                " FROM audit_events"
            )
        conn.commit()
        # As autovacuum would have, long before: the planner knows the tables' sizes, and
        # no analyze of a million fresh rows lands in the middle of the measurement.
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
