"""SQLite backend: a file in WAL mode, created on first start (0600); one writer at a time.

WAL checkpoints (copying committed pages into the database file, with its fsync)
run on a background thread after writes, not inside whichever request's COMMIT
happens to cross SQLite's threshold: the request path only appends to the WAL.
A request still checkpoints itself if the WAL reaches ``_BACKSTOP_PAGES``, so the
WAL stays bounded even if the background thread falls behind.

Once writes stop for ``_IDLE_TRUNCATE`` seconds the background thread empties the WAL
(a PASSIVE checkpoint reuses the file but never shortens it, so under steady load it
stays at the backstop's size for good).

Crypto-shredding reaches the files: ``secure_delete`` zeroes what a DELETE frees,
and after a transaction that deleted sealed credentials the background thread
truncates the WAL, whose older frames still held them.

Several processes on one file (``broker serve --workers N``, a ``broker`` command beside a
running broker): writers queue on the in-process lock and then on an advisory lock of
the file ``<database>-writer`` (``flock``), which every store on the file takes for each
write transaction and for the TRUNCATE checkpoint. The kernel hands it to the next
waiter at once, where SQLite's busy handler would sleep up to 100 ms between tries; and
a TRUNCATE checkpoint holding it has only readers to wait for (short, and none starts
on an older snapshot meanwhile), so it neither fails nor starves behind another
process's stream of writes. SQLite's own locking stays what makes writes exclusive: a
process that does not take the file lock (the ``sqlite3`` shell, an older broker) meets
the busy handler (30 s), as before. Each process runs its own background checkpointer;
a checkpoint copies every process's frames, so any of them keeps the WAL bounded, and
the one whose transaction deleted sealed credentials truncates it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.errors import StoreError, StoreFull
from broker.store.sql import IDENTITY, MIGRATIONS, PROBE_ROWS, SqlTx, statements

__all__ = ["SqliteStore"]

_BACKSTOP_PAGES = 16384  # 64 MiB of 4 KiB pages: a request checkpoints only past this
_CHECKPOINT_INTERVAL = 0.25  # seconds between background checkpoints while writes come
_IDLE_TRUNCATE = 5.0  # seconds without a write after which the WAL file is emptied


def _portable(sql: str) -> str:
    return sql.replace("BYTEA", "BLOB").replace(IDENTITY, "INTEGER PRIMARY KEY")


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is still open. After some errors (SQLITE_FULL, SQLITE_IOERR, ...)
    SQLite has rolled the transaction back itself, and a second ROLLBACK would raise
    "cannot rollback - no transaction is active" over the error that matters."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the error being raised says more
            conn.execute("ROLLBACK")


def _full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class _WriteLock:
    """One writer at a time: the threads of this process (a lock), then every process on
    the database file (``flock`` of ``<database>-writer``, see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self._threads = threading.Lock()
        self._fd = os.open(f"{path}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.url_for_humans = f"sqlite:///{path}"
        self.inline = True
        self.connections = 1  # one writer at a time; reads run inline
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock: _WriteLock | None = None
        self._dirty = threading.Event()
        self._shred = threading.Event()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._full = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The broker's alone; SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._write_lock = _WriteLock(self.path)
            self._connection()
        except (OSError, sqlite3.Error) as exc:
            if self._write_lock is not None:
                self._write_lock.close()
            raise StoreError(f"cannot open {self.path}: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")  # freed content is zeroed, not left
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[SqlTx]:
        if not write:
            with self._begin("BEGIN") as tx:
                yield tx
            return
        # Writers queue on our lock (this process's threads, then the file's: every process
        # on it) instead of in SQLite's busy handler, which sleeps up to 100 ms between
        # tries and ruins tail latency.
        with self._writer(), self._begin("BEGIN IMMEDIATE") as tx:
            yield tx
        self._full = False  # a write went through: there was room for it
        if tx.shredded:
            self._shred.set()
        self._dirty.set()
        if self._checkpointer is None:
            self._start_checkpointer()

    def _start_checkpointer(self) -> None:
        with self._lock:
            if self._checkpointer is None and not self._stop.is_set():
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True
                )
                self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = self._connection()  # this thread's own connection
        conn.execute("PRAGMA busy_timeout=1000")  # a busy round gives way to the next
        wal_used = False  # written to since the WAL was last emptied
        while not self._stop.is_set():
            if not self._dirty.wait(_IDLE_TRUNCATE if wal_used else None):
                # Idle: empty the WAL file (one busy round: try after the next write).
                with contextlib.suppress(sqlite3.Error):
                    self._truncate(conn)
                wal_used = False
                continue
            if self._stop.wait(_CHECKPOINT_INTERVAL):
                return
            self._dirty.clear()
            wal_used = True
            try:
                if self._shred.is_set():
                    self._truncate(conn)
                else:
                    # PASSIVE: copy what no reader still needs; never blocks writers.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                self._dirty.set()  # busy or failing: the next round, or the backstop, tries

    def _truncate(self, conn: sqlite3.Connection) -> None:
        """Copy every frame back and empty the WAL file: its older frames still hold what
        was deleted (shredded credentials). Writers of every process wait, briefly, on our
        lock; only readers can hold it up (a busy round: again at the next)."""
        with self._writer():
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            self._dirty.set()  # a reader held an old snapshot: again next round
        else:
            self._shred.clear()

    def _writer(self) -> _WriteLock:
        assert self._write_lock is not None  # set in __init__, or __init__ raised
        return self._write_lock

    @contextmanager
    def _begin(self, begin: str) -> Iterator[SqlTx]:
        conn = self._connection()
        try:
            # IMMEDIATE takes the write lock up front: no upgrade deadlocks between writers.
            conn.execute(begin)
        except sqlite3.Error as exc:
            raise StoreError(f"database unavailable: {exc}") from None
        try:
            yield SqlTx(conn.cursor(), _portable)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Rolled back: the action and its audit event did not happen. This holds for a
            # failing COMMIT too (no OutcomeUnknown here, unlike PostgreSQL): COMMIT is a
            # call into this process whose answer cannot be lost on the way; if it raises,
            # the transaction did not commit (it is still open, or SQLite rolled it back;
            # a WAL commit frame not completely written is ignored at recovery), and
            # _rollback ends what is left.
            _rollback(conn)
            raise self._failed(exc) from None
        except BaseException:
            _rollback(conn)
            raise

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        if _full(exc):
            self._full = True
            return StoreFull(f"database write failed, the disk (or database) is full: {exc}")
        return StoreError(f"database write failed: {exc}")

    @property
    def full(self) -> bool:
        return self._full

    def writable(self) -> None:
        """See ``broker/store/__init__.py``: rolled back, or written and committed while
        the last write failed for a full disk."""
        commit = self._full
        conn = self._connection()
        with self._writer():
            try:
                conn.execute("BEGIN IMMEDIATE")
                SqlTx(conn.cursor(), _portable).probe_write(PROBE_ROWS if commit else 1)
                conn.execute("COMMIT" if commit else "ROLLBACK")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise self._failed(exc) from None
        if commit:
            self._full = False
            self._dirty.set()  # the WAL holds the probe's pages: checkpoint as after any write

    def migrate(self) -> int:
        conn = self._connection()
        with self._writer():
            return self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0] or 0)
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this broker knows"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in statements(version, "sqlite"):
                    conn.execute(_portable(statement))
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return len(MIGRATIONS)

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
        if self._write_lock is not None:
            self._write_lock.close()
