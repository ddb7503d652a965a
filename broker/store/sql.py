"""One SQL implementation of the store's unit of work, for SQLite and PostgreSQL alike.

Statements are written with ``?`` placeholders; the PostgreSQL side swaps them for
``%s``. Every method runs inside the caller's transaction, so an action and its
audit event commit together or not at all.
"""

from __future__ import annotations

import functools
import operator
import re
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

from broker.store.model import OPEN_STATES, ClientRow, PullCredentialRow, StagingRow

__all__ = ["MIGRATIONS", "PROBE_ROWS", "SqlTx"]

PROBE_ROWS = 64
"""Rows of about 1 KB the probe of a store remembered full writes and commits."""

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
        # The hash chain and its signed checkpoints (see broker/audit/chain.py).
        "ALTER TABLE audit_events ADD COLUMN prev_hash TEXT",
        "ALTER TABLE audit_events ADD COLUMN hash TEXT",
        "CREATE TABLE audit_checkpoints ("
        " seq BIGINT PRIMARY KEY, head TEXT NOT NULL, at TEXT NOT NULL, kid TEXT NOT NULL,"
        " signature TEXT NOT NULL)",
    ],
    [
        # Repeatable actions (see broker/service/idempotency.py): no key, no secret in clear.
        "CREATE TABLE idempotency_keys ("
        " client TEXT NOT NULL, key_id TEXT NOT NULL, action TEXT NOT NULL,"
        " staging_guid TEXT NOT NULL, request TEXT NOT NULL, answer BYTEA,"
        " expires_at BIGINT NOT NULL, PRIMARY KEY (client, key_id))",
        "CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)",
    ],
    [
        # Retention of closed stagings (broker/service/retention.py): when prune found a
        # closed staging's repository gone for good, and the index the retention sweep walks
        # (closed rows so marked, oldest first).
        "ALTER TABLE stagings ADD COLUMN repository_gone_at BIGINT",
        "CREATE INDEX stagings_gone ON stagings (closed_at) WHERE repository_gone_at IS NOT NULL",
    ],
    [
        # Per-app pull credentials (broker/service/pullcreds.py): the secret's hash only.
        "CREATE TABLE pull_credentials ("
        " id TEXT PRIMARY KEY, app_guid TEXT NOT NULL, secret_hash TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, created_by TEXT NOT NULL, expires_at BIGINT,"
        " revoked_at BIGINT)",
        "CREATE INDEX pull_credentials_app ON pull_credentials (app_guid)",
        "CREATE INDEX stagings_app ON stagings (app_guid, state)",
    ],
]

_PULL_FIELDS = tuple(f.name for f in fields(PullCredentialRow))
_PULL_COLUMNS = ", ".join(_PULL_FIELDS)
_pull_values = operator.attrgetter(*_PULL_FIELDS)
_STAGING_FIELDS = tuple(f.name for f in fields(StagingRow))  # the columns, in the row's order
_STAGING_COLUMNS = ", ".join(_STAGING_FIELDS)
_staging_values = operator.attrgetter(*_STAGING_FIELDS)
_OPEN = "(" + ",".join(f"'{state}'" for state in OPEN_STATES) + ")"  # a constant: no parameters
_FORGETTABLE = (
    # The partial index stagings_gone serves it: its condition is spelled out.
    f"repository_gone_at IS NOT NULL AND closed_at < ? AND state NOT IN {_OPEN}"
)
_CHUNK = 500  # parameters in one statement, well under either database's limit


class SqlTx:
    """The store's operations on one open transaction (a DB-API cursor)."""

    def __init__(
        self, cursor: Any, placeholder: Callable[[str], str], audit_lock: str | None = None
    ) -> None:
        self._cur = cursor
        self._sql = placeholder
        self._audit_lock = audit_lock
        self.shredded = False
        """Sealed credentials were deleted: the backend may have more to do to make them
        leave its files (SQLite: zeroed pages are written, the WAL truncated)."""

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

    def assertion_used(self, client: str, jti: str) -> bool:
        row = self._one("SELECT 1 FROM used_assertions WHERE client=? AND jti=?", (client, jti))
        return row is not None

    def probe_write(self, rows: int) -> None:
        """Write ``rows`` rows of about 1 KB and delete them again: the readiness probe (see
        ``broker/store/__init__.py``). Expired at once, so nothing could ever use them."""
        params = [("broker:readyz", secrets.token_hex(500), 0) for _ in range(rows)]
        for row in params:
            self._exec("INSERT INTO used_assertions (client, jti, expires_at) VALUES (?,?,?)", row)
        self._exec("DELETE FROM used_assertions WHERE client=? AND expires_at=0", (params[0][0],))

    def forget_assertions(self, before: int) -> int:
        return int(
            self._exec("DELETE FROM used_assertions WHERE expires_at < ?", (before,)).rowcount
        )

    # -- idempotency keys -----------------------------------------------------------------

    def get_idempotency(
        self, client: str, key_id: str, now: int
    ) -> tuple[str, str, str, bytes | None] | None:
        """(action, staging_guid, request, sealed answer) of a key still in its window."""
        row = self._one(
            "SELECT action, staging_guid, request, answer FROM idempotency_keys"
            " WHERE client=? AND key_id=? AND expires_at > ?",
            (client, key_id, now),
        )
        if row is None:
            return None
        return str(row[0]), str(row[1]), str(row[2]), None if row[3] is None else bytes(row[3])

    def put_idempotency(
        self,
        client: str,
        key_id: str,
        action: str,
        staging_guid: str,
        request: str,
        answer: bytes | None,
        expires_at: int,
        now: int,
    ) -> bool:
        """False if a live row holds this key already (a concurrent request committed it)."""
        # A row of this key whose window is over is a stranger's: it gives way.
        self._exec(
            "DELETE FROM idempotency_keys WHERE client=? AND key_id=? AND expires_at <= ?",
            (client, key_id, now),
        )
        cur = self._exec(
            "INSERT INTO idempotency_keys"
            " (client, key_id, action, staging_guid, request, answer, expires_at)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (client, key_id) DO NOTHING",
            (client, key_id, action, staging_guid, request, answer, expires_at),
        )
        return bool(cur.rowcount == 1)

    def forget_idempotency(self, before: int) -> int:
        cur = self._exec("DELETE FROM idempotency_keys WHERE expires_at <= ?", (before,))
        return int(cur.rowcount)

    # -- pull credentials -----------------------------------------------------------------

    def insert_pull_credential(self, row: PullCredentialRow) -> None:
        self._exec(_insert("pull_credentials", _PULL_FIELDS), _pull_values(row))

    def get_pull_credential(self, credential_id: str) -> PullCredentialRow | None:
        row = self._one(
            f"SELECT {_PULL_COLUMNS} FROM pull_credentials WHERE id=?", (credential_id,)
        )
        return PullCredentialRow(*row) if row else None

    def pull_credentials_of(self, app_guid: str) -> list[PullCredentialRow]:
        rows = self._exec(
            f"SELECT {_PULL_COLUMNS} FROM pull_credentials WHERE app_guid=?"
            " ORDER BY created_at, id",
            (app_guid,),
        )
        return [PullCredentialRow(*r) for r in rows.fetchall()]

    def expire_pull_credentials(self, app_guid: str, at: int) -> list[str]:
        """Make the app's live credentials expire at ``at`` (or sooner, if they already
        do); the ids so changed."""
        # One statement (no read, then write): a concurrent issue or revoke cannot slip in.
        rows = self._exec(
            "UPDATE pull_credentials SET expires_at=? WHERE app_guid=? AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?) RETURNING id",
            (at, app_guid, at),
        ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def revoke_pull_credentials(self, app_guid: str, now: int) -> list[str]:
        """Revoke every credential of the app not revoked yet; their ids."""
        rows = self._exec(
            "UPDATE pull_credentials SET revoked_at=? WHERE app_guid=? AND revoked_at IS NULL"
            " RETURNING id",
            (now, app_guid),
        ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def app_has_completed_staging(self, app_guid: str) -> bool:
        row = self._one(
            "SELECT 1 FROM stagings WHERE app_guid=? AND state='completed' LIMIT 1", (app_guid,)
        )
        return row is not None

    # -- stagings -------------------------------------------------------------------------

    def insert_staging(self, s: StagingRow) -> bool:
        cur = self._exec(
            _insert("stagings", _STAGING_FIELDS) + " ON CONFLICT (staging_guid) DO NOTHING",
            _staging_values(s),
        )
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
        self,
        staging_guid: str,
        from_states: Sequence[str],
        to_state: str,
        now: int,
        result: str | None,
    ) -> bool:
        cur = self._exec(
            f"UPDATE stagings SET state=?, closed_at=?, result=?"
            f" WHERE staging_guid=? AND state IN ({_marks(from_states)})",
            (to_state, now, result, staging_guid, *from_states),
        )
        return bool(cur.rowcount == 1)

    def all_stagings(self) -> list[StagingRow]:
        rows = self._exec(f"SELECT {_STAGING_COLUMNS} FROM stagings ORDER BY created_at")
        return [StagingRow(*r) for r in rows.fetchall()]

    def open_stagings_for(self, tailor: str) -> list[StagingRow]:
        rows = self._exec(
            f"SELECT {_STAGING_COLUMNS} FROM stagings"
            f" WHERE tailor = ? AND state IN {_OPEN} ORDER BY created_at",
            (tailor,),
        )
        return [StagingRow(*r) for r in rows.fetchall()]

    def expired_stagings(self, now: int, limit: int = 100) -> list[StagingRow]:
        rows = self._exec(
            f"SELECT {_STAGING_COLUMNS} FROM stagings"
            f" WHERE state IN {_OPEN} AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [StagingRow(*r) for r in rows.fetchall()]

    def mark_repositories_gone(self, staging_guids: Sequence[str], at: int) -> int:
        """Record that the repositories of these closed stagings are gone for good, as a
        prune walk that began at ``at`` found them (see ``broker.prune.plan``). A mark is
        never moved or cleared, and an open staging is never marked. How many were marked."""
        marked = 0
        for i in range(0, len(staging_guids), _CHUNK):
            chunk = staging_guids[i : i + _CHUNK]
            cur = self._exec(
                "UPDATE stagings SET repository_gone_at=?"
                f" WHERE staging_guid IN ({_marks(chunk)}) AND state NOT IN {_OPEN}"
                " AND closed_at IS NOT NULL AND repository_gone_at IS NULL",
                (at, *chunk),
            )
            marked += int(cur.rowcount)
        return marked

    def forget_stagings(self, closed_before: int, limit: int) -> list[tuple[str, int]]:
        """Delete at most ``limit`` closed stagings, oldest first, that closed before
        ``closed_before`` and whose repository is known gone; (staging_guid, closed_at) of
        each row this transaction deleted (a concurrent one may have taken some already)."""
        rows = self._exec(
            "DELETE FROM stagings WHERE staging_guid IN ("
            f"SELECT staging_guid FROM stagings WHERE {_FORGETTABLE}"
            f" ORDER BY closed_at LIMIT ?) AND {_FORGETTABLE}"
            " RETURNING staging_guid, closed_at",
            (closed_before, limit, closed_before),
        )
        return [(str(r[0]), int(r[1])) for r in rows.fetchall()]

    def retention_counts(self, closed_before: int) -> tuple[int, int, int]:
        """(closed stagings, of them with their repository known gone, of those closed
        before ``closed_before``): what retention keeps and what it may forget."""
        row = self._one(
            "SELECT COUNT(*), COUNT(repository_gone_at),"
            " COUNT(CASE WHEN repository_gone_at IS NOT NULL AND closed_at < ? THEN 1 END)"
            f" FROM stagings WHERE state NOT IN {_OPEN}",
            (closed_before,),
        )
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

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
        deleted = bool(cur.rowcount == 1)
        self.shredded = self.shredded or deleted
        return deleted

    # -- audit (the rows only: broker.audit decides what goes in) -------------------------

    def lock_audit(self) -> None:
        """Take the audit log's write lock until this transaction ends (where one is needed:
        SQLite's writer already holds the database)."""
        if self._audit_lock:
            self._exec(self._audit_lock)

    def audit_head(self) -> tuple[int, str | None]:
        """The newest event's (seq, hash), or (0, None) for an empty log."""
        row = self._one("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), row[1]) if row else (0, None)

    def insert_audit(self, row: Mapping[str, Any]) -> None:
        self._exec(_insert("audit_events", tuple(row)), tuple(row.values()))

    def audit_rows(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        equal: Mapping[str, str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events after ``after`` in seq order, each as {column: value}."""
        clauses = ["seq > ?"]
        params: list[Any] = [after]
        for column, value in (equal or {}).items():
            clauses.append(f"{_identifier(column)} = ?")
            params.append(value)
        if since:
            clauses.append("at >= ?")
            params.append(since)
        if until:
            clauses.append("at < ?")
            params.append(until)
        sql = f"SELECT * FROM audit_events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
        return self._dicts(sql, [*params, limit])

    def unchained_seqs(self) -> set[int]:
        """Events written before the chain existed (schema version 1)."""
        return {int(r[0]) for r in self._exec("SELECT seq FROM audit_events WHERE hash IS NULL")}

    def set_audit_hashes(self, seq: int, prev: str, digest: str) -> None:
        self._exec("UPDATE audit_events SET prev_hash=?, hash=? WHERE seq=?", (prev, digest, seq))

    def seq_of_hash(self, digest: str) -> int | None:
        """The event whose hash is ``digest`` (a full scan: only asked on a broken link)."""
        row = self._one("SELECT seq FROM audit_events WHERE hash=? LIMIT 1", (digest,))
        return int(row[0]) if row else None

    def insert_checkpoint(self, row: Mapping[str, Any]) -> bool:
        sql = _insert("audit_checkpoints", tuple(row)) + " ON CONFLICT (seq) DO NOTHING"
        cur = self._exec(sql, tuple(row.values()))
        return bool(cur.rowcount == 1)

    def checkpoint_rows(self, from_seq: int = 0, to_seq: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit_checkpoints WHERE seq >= ?"
        params: list[Any] = [from_seq]
        if to_seq is not None:
            sql += " AND seq <= ?"
            params.append(to_seq)
        return self._dicts(sql + " ORDER BY seq", params)

    def last_checkpoint_seq(self) -> int:
        row = self._one("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
        return int(row[0]) if row else 0

    def _dicts(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cur = self._exec(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


_IDENT = re.compile(r"[a-z_][a-z0-9_]*")


def _identifier(name: str) -> str:
    # Column names come from code, never from a request; checked all the same.
    if not _IDENT.fullmatch(name):
        raise ValueError(f"not a column name: {name[:40]!r}")
    return name


def _marks(items: Collection[Any]) -> str:
    return ",".join("?" for _ in items)


@functools.lru_cache(maxsize=64)
def _insert(table: str, columns: tuple[str, ...]) -> str:
    """The INSERT for these columns; built (and its names checked) once per shape."""
    names = ", ".join(_identifier(name) for name in columns)
    return f"INSERT INTO {_identifier(table)} ({names}) VALUES ({_marks(columns)})"
