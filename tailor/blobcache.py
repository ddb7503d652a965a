"""Where blobs were last seen, so a copy can mount instead of download.

Like skopeo's blob-info cache: every blob the Tailor finds in or pushes to a
repository is recorded as (registry, digest) -> repository. A later copy of the
same digest into another repository of that registry tries a cross-repository
mount from the most recently seen places before it downloads anything. The record
is a hint: a failed mount only costs one request, and stale rows are dropped.

It also holds *claims*: a copy about to download a blob into a registry claims it
there, and a concurrent copy of the same blob into that registry (another repository,
another process of this user) waits for the claimant to finish and mounts from it
instead of downloading the blob a second time. A claim is kept fresh while its bytes
flow and is dropped when the download ends, however it ends; one not refreshed for
``CLAIM_STALE`` seconds (a killed process) no longer holds anyone back.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Protocol

__all__ = ["BlobLocations", "MemoryLocations", "SqliteLocations", "default_cache_path"]

_KEEP_PER_BLOB = 16
CLAIM_STALE = 15.0
"""Seconds after which a claim that was not refreshed is void (its holder is gone)."""


class BlobLocations(Protocol):
    def candidates(self, registry: str, digest: str, exclude: str) -> list[str]: ...

    def record(self, registry: str, digest: str, repository: str) -> None: ...

    def forget(self, registry: str, digest: str, repository: str) -> None: ...

    def claim(self, registry: str, digest: str, repository: str) -> str | None:
        """Claim the download of ``digest`` into ``registry`` for ``repository``: None when
        the claim is ours (taken, or refreshed), else the repository of the live claim."""
        ...

    def release(self, registry: str, digest: str, repository: str) -> None:
        """Drop our claim (a no-op when it is not ours)."""
        ...


def default_cache_path() -> Path:
    base = os.environ.get("TAILOR_CACHE_DIR")
    if base:
        return Path(base) / "blob-locations.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tailor" / "blob-locations.sqlite"


class MemoryLocations:
    """The same record for one process only (tests, or when no cache file is wanted)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], dict[str, int]] = {}
        self._claims: dict[tuple[str, str], tuple[str, float]] = {}
        self._tick = itertools.count()
        self._lock = threading.Lock()

    def candidates(self, registry: str, digest: str, exclude: str) -> list[str]:
        with self._lock:
            places = self._seen.get((registry, digest), {})
            ranked = sorted(places.items(), key=lambda kv: -kv[1])
        return [repo for repo, _ in ranked if repo != exclude][:_KEEP_PER_BLOB]

    def record(self, registry: str, digest: str, repository: str) -> None:
        with self._lock:
            # A counter, not the clock: two records in one clock tick still rank.
            self._seen.setdefault((registry, digest), {})[repository] = next(self._tick)

    def forget(self, registry: str, digest: str, repository: str) -> None:
        with self._lock:
            self._seen.get((registry, digest), {}).pop(repository, None)

    def claim(self, registry: str, digest: str, repository: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            holder, seen = self._claims.get((registry, digest), (repository, now))
            if holder != repository and seen > now - CLAIM_STALE:
                return holder
            self._claims[(registry, digest)] = (repository, now)
            return None

    def release(self, registry: str, digest: str, repository: str) -> None:
        with self._lock:
            if self._claims.get((registry, digest), ("",))[0] == repository:
                del self._claims[(registry, digest)]


class SqliteLocations:
    """The record in a small SQLite file shared by every Tailor run of this user."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with closing(self._connect()) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS blob_locations ("
                " registry TEXT NOT NULL, digest TEXT NOT NULL, repository TEXT NOT NULL,"
                " seen REAL NOT NULL, PRIMARY KEY (registry, digest, repository))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS blob_claims ("
                " registry TEXT NOT NULL, digest TEXT NOT NULL, repository TEXT NOT NULL,"
                " seen REAL NOT NULL, PRIMARY KEY (registry, digest))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, timeout=10, isolation_level=None)

    def candidates(self, registry: str, digest: str, exclude: str) -> list[str]:
        with self._lock, closing(self._connect()) as db:
            rows: Iterable[tuple[str]] = db.execute(
                "SELECT repository FROM blob_locations WHERE registry=? AND digest=?"
                " AND repository<>? ORDER BY seen DESC, rowid DESC LIMIT ?",
                (registry, digest, exclude, _KEEP_PER_BLOB),
            )
            return [r[0] for r in rows]

    def record(self, registry: str, digest: str, repository: str) -> None:
        with self._lock, closing(self._connect()) as db:
            db.execute(
                "INSERT INTO blob_locations VALUES (?,?,?,?) ON CONFLICT"
                " (registry, digest, repository) DO UPDATE SET seen=excluded.seen",
                (registry, digest, repository, time.time()),
            )

    def forget(self, registry: str, digest: str, repository: str) -> None:
        with self._lock, closing(self._connect()) as db:
            db.execute(
                "DELETE FROM blob_locations WHERE registry=? AND digest=? AND repository=?",
                (registry, digest, repository),
            )

    def claim(self, registry: str, digest: str, repository: str) -> str | None:
        now = time.time()
        with self._lock, closing(self._connect()) as db:
            # A write transaction from the start: of two processes claiming at once, the
            # second reads what the first wrote.
            db.execute("BEGIN IMMEDIATE")
            try:
                held = db.execute(
                    "SELECT repository, seen FROM blob_claims WHERE registry=? AND digest=?",
                    (registry, digest),
                ).fetchone()
                if held and held[0] != repository and held[1] >= now - CLAIM_STALE:
                    return str(held[0])
                db.execute(
                    "INSERT OR REPLACE INTO blob_claims VALUES (?,?,?,?)",
                    (registry, digest, repository, now),
                )
                return None
            finally:
                db.execute("COMMIT")

    def release(self, registry: str, digest: str, repository: str) -> None:
        with self._lock, closing(self._connect()) as db:
            db.execute(
                "DELETE FROM blob_claims WHERE registry=? AND digest=? AND repository=?",
                (registry, digest, repository),
            )
