"""The broker's store: one small interface, SQLite (embedded default) or PostgreSQL.

``open_store(url)`` picks the backend from ``sqlite:///path`` or ``postgresql://...``.
``store.transaction()`` yields a :class:`~broker.store.sql.SqlTx`; everything done
through it commits together, or not at all. A failure raises ``StoreError``: rolled
back, except ``OutcomeUnknown`` (PostgreSQL only): the COMMIT was sent and its answer
lost, so it may have committed.

Readiness (``store.writable()``, behind ``GET /readyz``): a store remembers that a write
failed because its disk (or its size limit) was full, until a write succeeds. While it
does not, the probe is a tiny write rolled back (the database is reachable, not read-only,
its write lock can be had; nothing reaches the disk). While it does, the probe writes
about 64 KB and deletes it again, committed: space for a request's writes and then some,
really written (a rolled-back write never reaches a full disk's files).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from broker.errors import StoreError
from broker.store.model import ClientRow, StagingRow
from broker.store.sql import SqlTx

__all__ = ["ClientRow", "SqlTx", "StagingRow", "Store", "open_store"]


class Store(Protocol):
    url_for_humans: str
    inline: bool
    """True when calls are local and fast enough to run on the event loop."""
    connections: int
    """How many transactions can be open at once (the pool's size)."""

    def migrate(self) -> int: ...

    def transaction(self, write: bool = True) -> AbstractContextManager[SqlTx]: ...

    @property
    def full(self) -> bool:
        """The last write failed because the disk (or the size limit) was full."""
        ...

    def writable(self) -> None:
        """Probe that a write would succeed now; raise StoreError (StoreFull) if not."""
        ...

    def close(self) -> None: ...


def open_store(url: str) -> Store:
    # Imported when chosen: an embedded broker never loads the PostgreSQL driver.
    if url.startswith("sqlite:///"):
        from broker.store.sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:///") :])
    if url.startswith(("postgresql://", "postgres://")):
        from broker.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError("BROKER_DATABASE_URL must start with sqlite:/// or postgresql://")
