"""One SQL implementation of the store's unit of work, for SQLite and PostgreSQL alike.

Statements are written with ``?`` placeholders; the PostgreSQL side swaps them for
``%s``. Every method runs inside the caller's transaction, so an action and its
audit event commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from broker.audit import GENESIS, AuditTampered, Checkpoint, event_hash
from broker.store.model import AuditEvent, AuditFilter, AuditRow, ClientRow, StagingRow

__all__ = ["MIGRATIONS", "SqlTx"]

Row = Sequence[Any]

# Version n is MIGRATIONS[n - 1]. Types are the portable subset of both databases.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE clients ("
        " name TEXT PRIMARY KEY, role TEXT NOT NULL, public_key TEXT NOT NULL,"
        " created_at BIGINT NOT NULL)",
        "CREATE TABLE used_assertions ("
        " client TEXT NOT NULL, jti TEXT NOT NULL, expires_at BIGINT NOT NULL,"
        " PRIMARY KEY (client, jti))",
        "CREATE INDEX used_assertions_expiry ON used_assertions (expires_at)",
        "CREATE TABLE stagings ("
        " staging_guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL, space_guid TEXT,"
        " pushed_by TEXT, image TEXT NOT NULL, registry TEXT NOT NULL,"
        " registry_username TEXT NOT NULL, tailor TEXT NOT NULL, cc_client TEXT NOT NULL,"
        " token_id TEXT NOT NULL, token_fp TEXT NOT NULL, state TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, redeemed_at BIGINT,"
        " closed_at BIGINT, result TEXT)",
        "CREATE INDEX stagings_open_expiry ON stagings (state, expires_at)",
        "CREATE TABLE sealed_credentials ( staging_guid TEXT PRIMARY KEY, sealed BYTEA NOT NULL)",
        "CREATE TABLE audit_events ("
        " seq BIGINT PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL, client TEXT,"
        " app_guid TEXT, staging_guid TEXT, image TEXT, registry TEXT,"
        " registry_username TEXT, token_fp TEXT, reason TEXT, detail TEXT)",
        "CREATE INDEX audit_staging ON audit_events (staging_guid)",
    ],
    [
        # The hash chain and its signed checkpoints (see broker/audit.py).
        "ALTER TABLE audit_events ADD COLUMN prev_hash TEXT",
        "ALTER TABLE audit_events ADD COLUMN hash TEXT",
        "CREATE TABLE audit_checkpoints ("
        " seq BIGINT PRIMARY KEY, head TEXT NOT NULL, at TEXT NOT NULL, kid TEXT NOT NULL,"
        " signature TEXT NOT NULL)",
    ],
]

_STAGING_COLUMNS = (
    "staging_guid, app_guid, space_guid, pushed_by, image, registry, registry_username,"
    " tailor, cc_client, token_id, token_fp, state, created_at, expires_at, redeemed_at,"
    " closed_at, result"
)
_AUDIT_COLUMNS = (
    "seq, at, event, client, app_guid, staging_guid, image, registry, registry_username,"
    " token_fp, reason, detail"
)


class SqlTx:
    """The store's operations on one open transaction (a DB-API cursor)."""

    def __init__(
        self, cursor: Any, placeholder: Callable[[str], str], audit_lock: str | None = None
    ) -> None:
        self._cur = cursor
        self._sql = placeholder
        self._audit_lock = audit_lock

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._cur.execute(self._sql(sql), tuple(params))
        return self._cur

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._exec(sql, params).fetchone()
        return row

    # -- clients --------------------------------------------------------------------------

    def add_client(self, client: ClientRow) -> bool:
        cur = self._exec(
            "INSERT INTO clients (name, role, public_key, created_at) VALUES (?,?,?,?)"
            " ON CONFLICT (name) DO NOTHING",
            (client.name, client.role, client.public_key, client.created_at),
        )
        return bool(cur.rowcount == 1)

    def get_client(self, name: str) -> ClientRow | None:
        row = self._one(
            "SELECT name, role, public_key, created_at FROM clients WHERE name=?", (name,)
        )
        return ClientRow(*row) if row else None

    def list_clients(self) -> list[ClientRow]:
        rows = self._exec("SELECT name, role, public_key, created_at FROM clients ORDER BY name")
        return [ClientRow(*r) for r in rows.fetchall()]

    def remove_client(self, name: str) -> bool:
        return bool(self._exec("DELETE FROM clients WHERE name=?", (name,)).rowcount == 1)

    # -- assertion replay -----------------------------------------------------------------

    def use_assertion(self, client: str, jti: str, expires_at: int) -> bool:
        """Record ``jti``; False when it was seen before (a replay)."""
        cur = self._exec(
            "INSERT INTO used_assertions (client, jti, expires_at) VALUES (?,?,?)"
            " ON CONFLICT (client, jti) DO NOTHING",
            (client, jti, expires_at),
        )
        return bool(cur.rowcount == 1)

    def forget_assertions(self, before: int) -> int:
        return int(
            self._exec("DELETE FROM used_assertions WHERE expires_at < ?", (before,)).rowcount
        )

    # -- stagings -------------------------------------------------------------------------

    def insert_staging(self, s: StagingRow) -> bool:
        cur = self._exec(
            f"INSERT INTO stagings ({_STAGING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (staging_guid) DO NOTHING",
            (
                s.staging_guid, s.app_guid, s.space_guid, s.pushed_by, s.image, s.registry,
                s.registry_username, s.tailor, s.cc_client, s.token_id, s.token_fp, s.state,
                s.created_at, s.expires_at, s.redeemed_at, s.closed_at, s.result,
            ),
        )  # fmt: skip
        return bool(cur.rowcount == 1)

    def get_staging(self, staging_guid: str) -> StagingRow | None:
        row = self._one(
            f"SELECT {_STAGING_COLUMNS} FROM stagings WHERE staging_guid=?", (staging_guid,)
        )
        return StagingRow(*row) if row else None

    def redeem(self, staging_guid: str, token_id: str, tailor: str, now: int) -> bool:
        """The atomic single use: only one caller, on any replica, turns open into redeemed."""
        cur = self._exec(
            "UPDATE stagings SET state='redeemed', redeemed_at=?"
            " WHERE staging_guid=? AND token_id=? AND tailor=? AND state='open'"
            " AND expires_at > ?",
            (now, staging_guid, token_id, tailor, now),
        )
        return bool(cur.rowcount == 1)

    def close_staging(
        self, staging_guid: str, from_states: Sequence[str], to_state: str, now: int,
        result: str | None,
    ) -> bool:  # fmt: skip
        marks = ",".join("?" for _ in from_states)
        cur = self._exec(
            f"UPDATE stagings SET state=?, closed_at=?, result=?"
            f" WHERE staging_guid=? AND state IN ({marks})",
            (to_state, now, result, staging_guid, *from_states),
        )
        return bool(cur.rowcount == 1)

    def all_stagings(self) -> list[StagingRow]:
        rows = self._exec(f"SELECT {_STAGING_COLUMNS} FROM stagings ORDER BY created_at")
        return [StagingRow(*r) for r in rows.fetchall()]

    def open_stagings_for(self, tailor: str) -> list[StagingRow]:
        rows = self._exec(
            f"SELECT {_STAGING_COLUMNS} FROM stagings"
            " WHERE tailor = ? AND state IN ('open','redeemed') ORDER BY created_at LIMIT 100",
            (tailor,),
        )
        return [StagingRow(*r) for r in rows.fetchall()]

    def expired_stagings(self, now: int, limit: int = 100) -> list[StagingRow]:
        rows = self._exec(
            f"SELECT {_STAGING_COLUMNS} FROM stagings"
            " WHERE state IN ('open','redeemed') AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [StagingRow(*r) for r in rows.fetchall()]

    # -- sealed credentials ---------------------------------------------------------------

    def put_sealed(self, staging_guid: str, sealed: bytes) -> None:
        self._exec(
            "INSERT INTO sealed_credentials (staging_guid, sealed) VALUES (?,?)",
            (staging_guid, sealed),
        )

    def get_sealed(self, staging_guid: str) -> bytes | None:
        row = self._one(
            "SELECT sealed FROM sealed_credentials WHERE staging_guid=?", (staging_guid,)
        )
        return bytes(row[0]) if row else None

    def delete_sealed(self, staging_guid: str) -> bool:
        cur = self._exec("DELETE FROM sealed_credentials WHERE staging_guid=?", (staging_guid,))
        return bool(cur.rowcount == 1)

    # -- audit ----------------------------------------------------------------------------

    def _head(self) -> tuple[int, str]:
        row = self._one("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), str(row[1] or GENESIS)) if row else (0, GENESIS)

    def append_audit(
        self, event: AuditEvent, at: str, floor: tuple[int, str] | None = None
    ) -> tuple[int, str]:
        """Append ``event`` to the chain; returns its (seq, hash).

        ``floor`` is the newest (seq, hash) the caller knows it appended: a stored head
        behind it means events were deleted, and nothing more is appended."""
        if self._audit_lock:
            # One writer at a time across every replica: one chain, one gap-free sequence.
            self._exec(self._audit_lock)
        last_seq, prev = self._head()
        if floor is not None and (
            last_seq < floor[0] or (last_seq == floor[0] and prev != floor[1])
        ):
            raise AuditTampered(
                f"the audit log ends at event {last_seq} but this broker appended up to "
                f"{floor[0]}: it was truncated or rewritten"
            )
        seq = last_seq + 1
        body = _body(seq, at, event)
        digest = event_hash(body, prev)
        self._exec(
            f"INSERT INTO audit_events ({_AUDIT_COLUMNS}, prev_hash, hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                seq, at, event.event, event.client, event.app_guid, event.staging_guid,
                event.image, event.registry, event.registry_username, event.token_fp,
                event.reason, json.dumps(event.detail, sort_keys=True) if event.detail else None,
                prev, digest,
            ),
        )  # fmt: skip
        return seq, digest

    def audit_head(self) -> tuple[int, str]:
        return self._head()

    def unchained_events(self) -> list[AuditRow]:
        """Events written before the chain existed (schema version 1)."""
        return self._rows("WHERE hash IS NULL", (), None)

    def chain_event(self, seq: int, prev: str, digest: str) -> None:
        self._exec("UPDATE audit_events SET prev_hash=?, hash=? WHERE seq=?", (prev, digest, seq))

    def _rows(self, where: str, params: Sequence[Any], limit: int | None) -> list[AuditRow]:
        sql = f"SELECT {_AUDIT_COLUMNS}, prev_hash, hash FROM audit_events {where} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, limit)
        out = []
        for r in self._exec(sql, params).fetchall():
            detail = json.loads(r[11]) if r[11] else {}
            event = AuditEvent(
                event=r[2], client=r[3], app_guid=r[4], staging_guid=r[5], image=r[6],
                registry=r[7], registry_username=r[8], token_fp=r[9], reason=r[10], detail=detail,
            )  # fmt: skip
            out.append(AuditRow(int(r[0]), r[1], event, r[12], r[13]))
        return out

    def audit_events(
        self, after: int = 0, limit: int = 1000, filters: AuditFilter | None = None
    ) -> list[AuditRow]:
        where, params = _where(after, filters)
        return self._rows(where, params, limit)

    def all_audit_events(self, after: int = 0) -> list[AuditRow]:
        """Every event after ``after``, read a page at a time, in one list."""
        rows: list[AuditRow] = []
        while page := self.audit_events(after=after, limit=5000):
            rows += page
            after = page[-1].seq
        return rows

    def seq_of_hash(self, digest: str) -> int | None:
        """The event whose hash is ``digest`` (a full scan: only asked on a broken link)."""
        row = self._one("SELECT seq FROM audit_events WHERE hash=? LIMIT 1", (digest,))
        return int(row[0]) if row else None

    def add_checkpoint(self, cp: Checkpoint) -> bool:
        cur = self._exec(
            "INSERT INTO audit_checkpoints (seq, head, at, kid, signature) VALUES (?,?,?,?,?)"
            " ON CONFLICT (seq) DO NOTHING",
            (cp.seq, cp.head, cp.at, cp.kid, cp.signature),
        )
        return bool(cur.rowcount == 1)

    def checkpoints(self, from_seq: int = 0, to_seq: int | None = None) -> list[Checkpoint]:
        sql = "SELECT seq, head, at, kid, signature FROM audit_checkpoints WHERE seq >= ?"
        params: list[Any] = [from_seq]
        if to_seq is not None:
            sql += " AND seq <= ?"
            params.append(to_seq)
        rows = self._exec(sql + " ORDER BY seq", params).fetchall()
        return [Checkpoint(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def last_checkpoint_seq(self) -> int:
        row = self._one("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
        return int(row[0]) if row else 0


def _body(seq: int, at: str, event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": seq, "at": at, "event": event.event, "client": event.client,
        "app_guid": event.app_guid, "staging_guid": event.staging_guid, "image": event.image,
        "registry": event.registry, "registry_username": event.registry_username,
        "token_fp": event.token_fp, "reason": event.reason, "detail": event.detail or {},
    }  # fmt: skip


def row_body(row: AuditRow) -> dict[str, Any]:
    """The hashed fields of a stored event, as the chain sees them."""
    return _body(row.seq, row.at, row.event)


def _where(after: int, f: AuditFilter | None) -> tuple[str, list[Any]]:
    clauses: list[str] = ["seq > ?"]
    params: list[Any] = [after]
    if f is not None:
        for column, value in (("app_guid", f.app_guid), ("staging_guid", f.staging_guid),
                              ("client", f.client), ("event", f.event)):  # fmt: skip
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if f.since:
            clauses.append("at >= ?")
            params.append(f.since)
        if f.until:
            clauses.append("at < ?")
            params.append(f.until)
    return "WHERE " + " AND ".join(clauses), params


def chain_unchained(tx: SqlTx) -> int:
    """Hash-chain events written before the chain existed (a schema version 1 log)."""
    pending = {row.seq for row in tx.unchained_events()}
    if not pending:
        return 0
    prev = GENESIS
    for row in tx.all_audit_events():
        if row.seq in pending:
            digest = event_hash(row_body(row), prev)
            tx.chain_event(row.seq, prev, digest)
            prev = digest
        else:
            prev = str(row.hash)
    return len(pending)
