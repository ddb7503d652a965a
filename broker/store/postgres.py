"""PostgreSQL backend (psycopg 3, pooled): for several broker replicas on one database.

A failed transaction raises ``StoreError``: rolled back, nothing was done. Except one
case: the body was done, the COMMIT sent, and no answer came back (the connection
dropped). PostgreSQL may have committed or not, and nothing here can tell: that is
``OutcomeUnknown``, and the caller is told to look before acting again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from broker.errors import OutcomeUnknown, StoreError, StoreFull
from broker.store.sql import MIGRATIONS, PROBE_ROWS, SqlTx, statements

__all__ = ["PostgresStore"]

# Arbitrary constants naming the two advisory locks this broker takes.
_MIGRATION_LOCK = 7_453_001
_AUDIT_LOCK = 7_453_002  # the audit integrator's (one replica at a time)
_THIS_SCHEMA = "hashtext(current_schema())"
"""The integrator's lock is per schema: two logs in two schemas of one database (two
deployments, or two tests) never wait for each other's integrator."""


def _placeholders(sql: str) -> str:
    return sql.replace("?", "%s")


def _refused(exc: Exception) -> bool:
    """PostgreSQL answered (an ERROR, e.g. a deferred constraint or a serialization failure
    at COMMIT): the transaction was rolled back. A lost connection has no SQLSTATE; a FATAL
    one (the server shutting down, this session terminated) ends the connection with the
    COMMIT's fate unsaid."""
    if not isinstance(exc, psycopg.Error) or exc.sqlstate is None:
        return False
    return exc.diag.severity_nonlocalized == "ERROR"


class PostgresStore:
    def __init__(self, url: str, max_size: int = 10) -> None:
        self.url_for_humans = url.split("@")[-1]  # never the password
        self.inline = False
        self.connections = max_size
        self._full = False
        try:
            # One direct attempt first: a wrong URL fails now, not after the pool's retries.
            psycopg.connect(url, connect_timeout=5).close()
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                open=True,
                timeout=10,
                kwargs={"autocommit": False},
            )
            self._pool.wait(timeout=10)
        except (psycopg.Error, Exception) as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.url_for_humans}: {type(exc).__name__}"
            ) from None

    @contextmanager
    def transaction(self, write: bool = True, *, rollback: bool = False) -> Iterator[SqlTx]:
        committing = False
        try:
            with (
                self._pool.connection() as conn,
                conn.transaction(force_rollback=rollback),
                conn.cursor() as cur,
            ):
                yield SqlTx(
                    cur,
                    _placeholders,
                    f"SELECT pg_try_advisory_xact_lock({_AUDIT_LOCK}, {_THIS_SCHEMA})",
                    f"SELECT pg_advisory_xact_lock({_AUDIT_LOCK}, {_THIS_SCHEMA})",
                )
                # The body is done: leaving these blocks sends COMMIT, and from here on a
                # failure may come after PostgreSQL has committed (a read, or a probe
                # rolled back, has nothing that could have been done).
                committing = write and not rollback
        except (psycopg.Error, PoolTimeout) as exc:
            if committing and not _refused(exc):
                # The COMMIT went out and its answer did not come back (the connection
                # dropped, the server went away): it may have committed or not, and no
                # one can say which from here. Never "nothing was done".
                raise OutcomeUnknown(
                    "the database's answer to COMMIT was lost "
                    f"({type(exc).__name__}): this action may have been done"
                ) from None
            # Rolled back: the action and its audit event did not happen.
            if isinstance(exc, psycopg.errors.DiskFull):
                self._full = True
                raise StoreFull(
                    "database write failed, the database's disk is full: DiskFull"
                ) from None
            raise StoreError(f"database write failed: {type(exc).__name__}") from None
        if write and not rollback:
            self._full = False  # a write went through: there was room for it

    @property
    def full(self) -> bool:
        return self._full

    def writable(self) -> None:
        """See ``broker/store/__init__.py``: rolled back (the database is reachable and not
        a read-only standby), or written and committed while the last write failed for a
        full disk."""
        commit = self._full
        with self.transaction(rollback=not commit) as tx:
            tx.probe_write(PROBE_ROWS if commit else 1)

    def migrate(self) -> int:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # Replicas starting together: one migrates, the others wait and then see it done.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            row = cur.fetchone()
            current = int(row[0] or 0) if row else 0
            if current > len(MIGRATIONS):
                raise StoreError(f"database schema version {current} is newer than this broker")
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in statements(version, "postgresql"):
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        return len(MIGRATIONS)

    def close(self) -> None:
        self._pool.close()
