"""The audit log: the only way events get in, and every way they come out.

Writers append inside their own transaction through an :class:`AuditWriter`
(``AuditLog.writer(tx)``), so an action and its event commit together or not at
all (fail closed). Appending takes no lock: the event is written *pending*, and the
integrator (:meth:`AuditLog.integrate`, broker/audit/integrator.py) gives it its
place in the Merkle tree and signs a checkpoint, on a timer (the ``audit-integrate``
job, every ``BROKER_AUDIT_CHECKPOINT_SECONDS``), before every read of the log, and
at shutdown. The chain's events of an older broker are adopted once
(:meth:`AuditLog.upgrade`). Verification streams the log a page at a time. The
witnesses' cosignatures are kept and served by broker/audit/cosignatures.py; the
verification and the export read the checkpoints with them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from broker.audit.canonical import canonical
from broker.audit.chain import ChainCheck, ChainEvent
from broker.audit.checkpoints import LogIdentity, SignedCheckpoint
from broker.audit.cosignatures import cosigned_notes
from broker.audit.events import AUDIT_MIGRATED, AuditEvent, Record, timestamp
from broker.audit.export import export_lines
from broker.audit.integrator import Integrated, integrate
from broker.audit.leaves import COLUMNS
from broker.audit.merkle import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    stored_index,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from broker.audit.query import AuditFilter
from broker.audit.verify import Report, verify_rows
from broker.audit.witnesses import WitnessPolicy
from broker.errors import AuditTampered, Invalid, SetupError
from broker.keys import KeyMaterial
from broker.store import SqlTx, Store

__all__ = ["AuditLog", "AuditWriter", "Verification"]

log = logging.getLogger("broker.audit")
_PAGE = 5000  # events per read transaction when the whole log is read
_BATCH = 500
"""Pending events placed per integration transaction. On SQLite that transaction holds the
store's one write lock while it hashes its events (about 30 us each): a request's write
waits for one batch at most (about 15 ms), not for a whole round's events."""
_ROUNDS = 10_000  # batches in one call at most: 5,000,000 events


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
        self.events: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> None:
        self._audit._append(self._tx, event)
        self.events.append(event)

    def committed(self) -> None:
        """Call after the transaction commits: the events now exist (pending)."""
        self._audit._committed(self.events)


_LOG_COLUMNS = (*COLUMNS, "prev_hash", "hash")


class AuditLog:
    """One store's audit log. Without ``keys`` it can only be read (and verified with a
    log identity the reader brings): what an auditor with database access has."""

    def __init__(
        self,
        store: Store,
        keys: KeyMaterial | None,
        *,
        origin: str,
        keep_every: int = 0,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[AuditEvent], None] = lambda event: None,
        on_verified: Callable[[Verification], None] = lambda done: None,
        on_integrated: Callable[[Integrated | None, str | None], None] = lambda done, why: None,
    ) -> None:
        self._store = store
        self.origin = origin
        self.identity = (
            LogIdentity(origin, keys.audit_public, keys.audit_key) if keys is not None else None
        )
        self._clock = clock
        self._keep_every = keep_every
        self._on_event = on_event
        self._on_verified = on_verified
        self._on_integrated = on_integrated
        self._lock = threading.Lock()
        self.head: tuple[int, bytes] | None = None
        """The (size, root) this process integrated last: the log must never fall behind it."""
        self.halted: str | None = None
        """Why integration stopped (the stored tree was cut or rewritten), or None."""

    # -- writing --------------------------------------------------------------------------

    def writer(self, tx: SqlTx) -> AuditWriter:
        return AuditWriter(self, tx)

    def _append(self, tx: SqlTx, event: AuditEvent) -> None:
        row = dict(vars(event))
        row["detail"] = canonical(event.detail).decode() if event.detail else None
        tx.insert_audit({"at": timestamp(self._clock()), **row})

    def _committed(self, events: list[AuditEvent]) -> None:
        for event in events:
            self._on_event(event)

    def _signing(self) -> LogIdentity:
        if self.identity is None:
            raise SetupError("this audit log is opened to read only: no audit signing key")
        return self.identity

    def integrate(self, *, sign: bool = True) -> Integrated | None:
        """Place every pending event (in batches), and sign a checkpoint if the log grew.
        None when another replica holds the integrator's lock now. Raises AuditTampered
        (and says so once in the log, and to ``on_integrated``) when the stored tree no
        longer matches the last signed checkpoint or what this process integrated."""
        identity = self._signing()
        done: Integrated | None = None
        with self._lock:
            for _ in range(_ROUNDS):
                try:
                    with self._store.transaction() as tx:
                        step = integrate(
                            tx,
                            identity,
                            now=int(self._clock()),
                            limit=_BATCH,
                            sign=sign,
                            floor=self.head,
                            keep_every=self._keep_every,
                        )
                except AuditTampered as exc:
                    if self.halted != str(exc):
                        log.error("audit log integration halted", extra={"problem": str(exc)})
                    self.halted = str(exc)
                    self._on_integrated(None, self.halted)
                    raise
                if step is None:
                    break
                self.halted = None
                done = step
                self.head = (step.size, step.root)
                if step.signed is not None:
                    log.debug("audit checkpoint signed", extra={"size": step.size})
                if step.added < _BATCH:
                    break
                time.sleep(0)  # the GIL, and so the lock, to a writer waiting between batches
        self._on_integrated(done, None)
        return done

    def checkpoint(self) -> SignedCheckpoint | None:
        """Integrate and sign (the timer and shutdown): the newest checkpoint."""
        self.integrate()
        return self.latest()

    def _caught_up(self) -> None:
        """Before a read: what was written is in the log (when this side can integrate).
        A log whose integration halted is still read as it is: the alarm is raised (the
        ERROR line, the metric, the verification), the auditor's reads are not refused."""
        if self.identity is not None:
            with contextlib.suppress(AuditTampered):
                self.integrate()

    def upgrade(self) -> int:
        """Adopt the events an older broker's hash chain holds: verified as a chain
        first (a broken chain is refused, naming its first problem), then placed as the
        first leaves in their order, followed by an ``audit.migrated`` event recording
        the chain's head; then a checkpoint is signed. Returns how many were adopted."""
        identity = self._signing()
        with self._lock, self._store.transaction() as tx:
            if not tx.try_integrator_lock():
                return 0  # another replica adopts them
            chain = ChainCheck()  # read a page at a time, none kept
            after = 0
            while page := tx.pending_audit(_PAGE, after_id=after):
                for row in page:
                    if row.get("prev_hash") is None:
                        break
                    record = Record.from_row({**row, "seq": row["id"]})
                    chain.add(ChainEvent(record.seq, str(record.prev_hash),
                                         str(record.hash), record.body()))  # fmt: skip
                else:
                    after = int(page[-1]["id"])
                    continue
                break
            head = chain.head
            if head is None:
                return 0
            if chain.problem is not None:
                raise AuditTampered(
                    f"the audit chain of the older broker does not verify, so it was not"
                    f" adopted into the log: {chain.problem}"
                )
            step = integrate(
                tx, identity, now=int(self._clock()), limit=chain.count, sign=False,
                adopting=True,
            )  # fmt: skip
            assert step is not None and step.size == head.seq
            migrated = AUDIT_MIGRATED(detail={"chain_head": head.hash, "chain_events": head.seq})
            self._append(tx, migrated)
            step = integrate(tx, identity, now=int(self._clock()), limit=1)
            assert step is not None
            self.head = (step.size, step.root)
        log.info("audit chain adopted into the log", extra={"events": chain.count})
        return chain.count

    # -- reading --------------------------------------------------------------------------

    def page(self, after: int, limit: int, filters: AuditFilter | None = None) -> list[Record]:
        """Events after seq ``after`` that match ``filters``, at most ``limit``."""
        self._caught_up()
        f = filters or AuditFilter()
        with self._store.transaction(write=False) as tx:
            rows = tx.audit_rows(
                after=after, limit=limit, equal=f.equal(), since=f.since, until=f.until
            )
        return [Record.from_row(r) for r in rows]

    def latest(self) -> SignedCheckpoint | None:
        """The newest signed checkpoint, as stored (verbatim note)."""
        with self._store.transaction(write=False) as tx:
            row = tx.latest_note()
        if row is None:
            return None
        note = str(row["note"]).encode()
        if self.identity is None:
            return SignedCheckpoint.unverified(note)  # a reader: checked by whoever reads it
        return self.identity.open(note)

    def size(self) -> int:
        with self._store.transaction(write=False) as tx:
            return tx.log_size()

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` (seq - 1) in the tree of ``size``, checked
        before it is served against the stored leaf and root (a damaged stored tree is an
        error and an alarm, never a wrong proof)."""
        with self._store.transaction(write=False) as tx:
            _within(size, tx.log_size())
            try:
                proof = inclusion_proof(index, size, tx.tree_hashes)
                leaf, root = (
                    tx.tree_hashes([stored_index(0, index)])[0],
                    tree_hash(size, tx.tree_hashes),
                )
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        try:
            verify_inclusion(index, size, leaf, proof, root)
        except ProofError as exc:
            raise self._damaged(f"inclusion proof of {index} in {size}: {exc}") from None
        return proof

    def consistency(self, old: int, size: int) -> list[bytes]:
        """The consistency proof from the tree of ``old`` leaves to the one of ``size``,
        checked against the stored roots before it is served."""
        with self._store.transaction(write=False) as tx:
            _within(size, tx.log_size())
            try:
                proof = consistency_proof(old, size, tx.tree_hashes)
                roots = tree_hash(old, tx.tree_hashes), tree_hash(size, tx.tree_hashes)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        try:
            verify_consistency(old, size, roots[0], roots[1], proof)
        except ProofError as exc:
            raise self._damaged(f"consistency proof of {old} to {size}: {exc}") from None
        return proof

    @staticmethod
    def _damaged(what: str) -> AuditTampered:
        log.error("audit log: the stored tree gives a wrong proof", extra={"problem": what})
        return AuditTampered(f"the stored tree is damaged: {what}")

    @staticmethod
    def _records(tx: SqlTx, after: int = 0, to_seq: int | None = None) -> Iterator[Record]:
        while page := tx.audit_rows(after=after, limit=_PAGE, to_seq=to_seq):
            yield from (Record.from_row(r) for r in page)
            after = int(page[-1]["seq"])

    def verify(
        self, identity: LogIdentity | None = None, policy: WitnessPolicy | None = None
    ) -> Report:
        """Verify the whole stored log against its signed checkpoints, and that it
        reaches what this process integrated.

        Streamed a page at a time, each page in its own short transaction, so a long
        verification never pins one snapshot (with SQLite that would stop WAL
        checkpoints for as long as it runs). The checkpoints are read first; the log
        only grows, so every event a checkpoint covers is in the pages read next. Slow
        for a long log: keep it off the event loop. ``policy``: the cosignatures (kept
        with the checkpoints) an auditor requires."""
        identity = identity or self.identity
        if identity is None:
            raise SetupError("no audit log verifier key given")
        with self._store.transaction(write=False) as tx:
            notes = cosigned_notes(tx, tx.note_rows())
            size = tx.log_size()

        def pages() -> Iterator[Sequence[Sequence[Any]]]:
            after = 0
            while after < size:
                with self._store.transaction(write=False) as tx:
                    page = tx.log_rows(_LOG_COLUMNS, after=after, limit=_PAGE, to_seq=size)
                if not page:
                    return
                yield page
                after = int(page[-1][0])

        def stored_root(at: int) -> bytes:
            with self._store.transaction(write=False) as tx:
                return tree_hash(at, tx.tree_hashes)

        return verify_rows(
            pages(), notes, identity, expected=self.head, stored_root=stored_root, policy=policy
        )

    def check(self) -> Verification:
        """Verify now, publish the result (metrics), and raise the alarm in the log when
        the log is not intact (the background check, the API and the page)."""
        started = time.monotonic()
        if self.identity is not None:
            try:
                self.integrate()
            except AuditTampered:
                pass  # verification names it
        report = self.verify()
        done = Verification(report, time.time(), time.monotonic() - started)
        self._on_verified(done)
        if not report.intact:
            log.error(
                "audit log verification failed",
                extra={"problems": len(report.problems), "first_problem": report.problems[0]},
            )
        return done

    def export(self, filters: AuditFilter, shown: dict[str, Any]) -> Iterator[str]:
        """The export's lines (see broker.audit.export), sealed by the checkpoint signed
        now over the whole log. ``shown`` is the filters as the auditor gave them."""
        identity = self._signing()
        self.integrate()
        with self._store.transaction(write=False) as tx:
            latest = tx.latest_note()
            if latest is None:
                raise SetupError("the audit log is empty: nothing to export")
            rows = tx.note_rows(to_size=int(latest["size"]))
            if not rows or rows[-1]["size"] != latest["size"]:
                rows.append(latest)  # thinned meanwhile (another replica integrated)
            # With their cosignatures: an auditor can require witnesses offline.
            notes = cosigned_notes(tx, rows)
        seal = identity.open(notes[-1])
        f = filters
        everything = f == AuditFilter()

        def selected() -> Iterator[tuple[Record, list[bytes] | None]]:
            after = 0
            while True:
                with self._store.transaction(write=False) as tx:
                    page = tx.audit_rows(
                        after=after, limit=_PAGE, to_seq=seal.size, equal=f.equal(),
                        since=f.since, until=f.until,
                    )  # fmt: skip
                    proved = [
                        (record, None if everything else
                         inclusion_proof(record.seq - 1, seal.size, tx.tree_hashes))
                        for record in map(Record.from_row, page)
                    ]  # fmt: skip
                if not page:
                    return
                yield from proved
                after = int(page[-1]["seq"])

        return export_lines(selected(), seal, notes, shown, everything)


def _within(size: int, have: int) -> None:
    if size < 1 or size > have:
        raise Invalid(f"size must be between 1 and the log's size ({have})")
