"""The audit log: the only way events get in, and every way they come out.

Writers append inside their own transaction through an :class:`AuditWriter`
(``AuditLog.writer(tx)``), so an action and its event commit together or not at
all (fail closed). Appending takes the store's audit lock (an advisory lock on
PostgreSQL; SQLite has one writer anyway), refuses to go on when the
stored head is behind what this process appended (the log was truncated or
rewritten: :class:`~broker.errors.AuditTampered`), hashes the event onto the
chain and signs a checkpoint every ``checkpoint_every`` events. Checkpoints are
also signed on a timer and at shutdown (:meth:`AuditLog.checkpoint`) and at every
export (the seal). Verification streams the stored log a page at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.chain import (
    GENESIS,
    ChainEvent,
    Checkpoint,
    Report,
    chain_event,
    event_hash,
    sign_checkpoint,
)
from broker.audit.chain import verify_chain as _verify_chain
from broker.audit.events import AuditEvent, Record, timestamp
from broker.audit.export import export_lines
from broker.audit.query import AuditFilter
from broker.errors import AuditTampered, SetupError
from broker.keys import KeyMaterial
from broker.store import SqlTx, Store

__all__ = ["AuditLog", "AuditWriter", "Verification"]

log = logging.getLogger("broker.audit")
_PAGE = 5000  # events per read transaction when the whole log is read


@dataclass(frozen=True)
class Verification:
    """One full verification of the stored log, and when it finished."""

    report: Report
    finished_at: float
    seconds: float


class AuditWriter:
    """The audit half of one transaction: appends in order; announced once it commits."""

    def __init__(self, audit: AuditLog, tx: SqlTx) -> None:
        self._audit = audit
        self._tx = tx
        self.head: tuple[int, str] | None = None
        self.events: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> Record:
        record = self._audit._append(self._tx, event, self.head)
        self.head = (record.seq, str(record.hash))
        self.events.append(event)
        return record

    def committed(self) -> None:
        """Call after the transaction commits: the events now exist."""
        self._audit._committed(self.head, self.events)


class AuditLog:
    """One store's audit log. Without ``keys`` it can only be read (and verified with
    keys the reader brings): what an auditor with database access has."""

    def __init__(
        self,
        store: Store,
        keys: KeyMaterial | None,
        *,
        checkpoint_every: int = 100,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[AuditEvent], None] = lambda event: None,
        on_verified: Callable[[Verification], None] = lambda done: None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._every = checkpoint_every
        self._clock = clock
        self._on_event = on_event
        self._on_verified = on_verified
        self._lock = threading.Lock()
        self.head: tuple[int, str] | None = None
        """The newest (seq, hash) this process appended: the log must never end before it."""

    # -- writing --------------------------------------------------------------------------

    def writer(self, tx: SqlTx) -> AuditWriter:
        return AuditWriter(self, tx)

    def _append(self, tx: SqlTx, event: AuditEvent, floor: tuple[int, str] | None) -> Record:
        # One writer at a time across every replica: one chain, one gap-free sequence.
        tx.lock_audit()
        last_seq, stored = tx.audit_head()
        prev = stored or GENESIS
        floor = floor or self.head
        if floor is not None and (
            last_seq < floor[0] or (last_seq == floor[0] and prev != floor[1])
        ):
            raise AuditTampered(
                f"the audit log ends at event {last_seq} but this broker appended up to "
                f"{floor[0]}: it was truncated or rewritten"
            )
        seq, at, fields = last_seq + 1, timestamp(self._clock()), vars(event)
        digest = event_hash({**fields, "seq": seq, "at": at}, prev)
        record = Record(**fields, seq=seq, at=at, prev_hash=prev, hash=digest)
        tx.insert_audit(record.row())
        if record.seq % self._every == 0:
            tx.insert_checkpoint(self._sign(record.seq, str(record.hash), at).row())
        return record

    def _committed(self, head: tuple[int, str] | None, events: list[AuditEvent]) -> None:
        if head is not None:
            with self._lock:
                if self.head is None or head[0] > self.head[0]:
                    self.head = head
        for event in events:
            self._on_event(event)

    def _sign(self, seq: int, head: str, at: str) -> Checkpoint:
        if self._keys is None:
            raise SetupError("this audit log is opened to read only: no audit signing key")
        return sign_checkpoint(self._keys.audit_key, self._keys.audit_kid, seq, head, at)

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head if events came since the last checkpoint (timer, shutdown)."""
        with self._store.transaction() as tx:
            seq, head = tx.audit_head()
            if seq == 0 or seq <= tx.last_checkpoint_seq():
                return None
            cp = self._sign(seq, str(head), timestamp(self._clock()))
            tx.insert_checkpoint(cp.row())
        log.info("audit checkpoint signed", extra={"seq": cp.seq, "head": cp.head, "kid": cp.kid})
        return cp

    def upgrade(self) -> int:
        """Hash-chain events written before the chain existed (a schema version 1 log)."""
        with self._store.transaction() as tx:
            tx.lock_audit()
            pending = tx.unchained_seqs()
            if not pending:
                return 0
            prev = GENESIS
            for record in self._records(tx):
                if record.seq in pending:
                    digest = event_hash(record.body(), prev)
                    tx.set_audit_hashes(record.seq, prev, digest)
                    prev = digest
                else:
                    prev = str(record.hash)
        return len(pending)

    # -- reading --------------------------------------------------------------------------

    def page(self, after: int, limit: int, filters: AuditFilter | None = None) -> list[Record]:
        """Events after seq ``after`` that match ``filters``, at most ``limit``."""
        f = filters or AuditFilter()
        with self._store.transaction(write=False) as tx:
            rows = tx.audit_rows(
                after=after, limit=limit, equal=f.equal(), since=f.since, until=f.until
            )
        return [Record.from_row(r) for r in rows]

    @staticmethod
    def _records(tx: SqlTx, after: int = 0) -> Iterator[Record]:
        while page := tx.audit_rows(after=after, limit=_PAGE):
            yield from (Record.from_row(r) for r in page)
            after = int(page[-1]["seq"])

    def verify(self, keys: Mapping[str, ed25519.Ed25519PublicKey] | None = None) -> Report:
        """Verify the whole stored log, and that it reaches what this process appended.

        Streamed a page at a time, each page in its own short transaction, so a long
        verification never pins one snapshot (with SQLite that would stop WAL
        checkpoints for as long as it runs). The log is append-only and pages go by
        seq, so events appended meanwhile are verified too. Checkpoints are read
        first: each was committed with or after its event, so the pages read next
        include every event a checkpoint names. Slow for a long log: keep it off the
        event loop."""
        with self._store.transaction(write=False) as tx:
            checkpoints = [Checkpoint.from_row(r) for r in tx.checkpoint_rows()]

        def events() -> Iterator[ChainEvent]:
            after = 0
            while True:
                with self._store.transaction(write=False) as tx:
                    page = tx.audit_rows(after=after, limit=_PAGE)
                if not page:
                    return
                yield from (chain_event(Record.from_row(r)) for r in page)
                after = int(page[-1]["seq"])

        def locate(digest: str) -> int | None:
            with self._store.transaction(write=False) as tx:
                return tx.seq_of_hash(digest)

        if keys is None:
            if self._keys is None:
                raise SetupError("no audit verification keys given")
            keys = self._keys.audit_public
        return _verify_chain(events(), checkpoints, keys, expected_head=self.head, locate=locate)

    def check(self) -> Verification:
        """Verify now, publish the result (metrics), and raise the alarm in the log when
        the log is not intact (the background check, the API and the page)."""
        started = time.monotonic()
        report = self.verify()
        done = Verification(report, time.time(), time.monotonic() - started)
        self._on_verified(done)
        if not report.intact:
            log.error(
                "audit chain verification failed",
                extra={"problems": len(report.problems), "first_problem": report.problems[0]},
            )
        return done

    def export(self, filters: AuditFilter, shown: dict[str, Any]) -> Iterator[str]:
        """The export's lines (see broker.audit.export), sealed by a checkpoint over the
        head signed now. ``shown`` is the filters as the auditor gave them (the header)."""
        f = filters
        with self._store.transaction(write=False) as tx:
            selected = {
                int(r["seq"])
                for r in tx.audit_rows(limit=10**9, equal=f.equal(), since=f.since, until=f.until)
            }
        with self._store.transaction() as tx:
            head_seq, head = tx.audit_head()
            if head_seq:
                tx.insert_checkpoint(
                    self._sign(head_seq, str(head), timestamp(self._clock())).row()
                )
        first = min(selected) if selected else head_seq + 1
        with self._store.transaction(write=False) as tx:
            records = list(self._records(tx, after=first - 1)) if selected else []
            checkpoints = [
                Checkpoint.from_row(r) for r in tx.checkpoint_rows(from_seq=first, to_seq=head_seq)
            ]
        events = [chain_event(r) for r in records if r.seq <= head_seq]
        return export_lines(events, checkpoints, shown, first, head_seq, selected)
