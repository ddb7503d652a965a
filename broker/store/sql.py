"""One SQL implementation of the store's unit of work, for SQLite and PostgreSQL alike.

Statements are written with ``?`` placeholders; the PostgreSQL side swaps them for
``%s``. Every method runs inside the caller's transaction, so an action and its
audit event commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from broker.store.model import AuditEvent, AuditRow, ClientRow, StagingRow

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

    def append_audit(self, event: AuditEvent, at: str) -> int:
        if self._audit_lock:
            # One writer at a time across every replica: one gap-free sequence.
            self._exec(self._audit_lock)
        row = self._one("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
        seq = int(row[0] if row else 0) + 1
        self._exec(
            f"INSERT INTO audit_events ({_AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                seq, at, event.event, event.client, event.app_guid, event.staging_guid,
                event.image, event.registry, event.registry_username, event.token_fp,
                event.reason, json.dumps(event.detail, sort_keys=True) if event.detail else None,
            ),
        )  # fmt: skip
        return seq

    def audit_events(self, after: int = 0, limit: int = 1000) -> list[AuditRow]:
        rows = self._exec(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        out = []
        for r in rows.fetchall():
            detail = json.loads(r[11]) if r[11] else {}
            event = AuditEvent(
                event=r[2], client=r[3], app_guid=r[4], staging_guid=r[5], image=r[6],
                registry=r[7], registry_username=r[8], token_fp=r[9], reason=r[10], detail=detail,
            )  # fmt: skip
            out.append(AuditRow(int(r[0]), r[1], event))
        return out
