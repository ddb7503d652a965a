"""Integration: pending events get their place in the log, the tree grows, and the log
signs a checkpoint over it.

A request writes its event in its own transaction, with no place (``seq``) and no
lock (fail closed all the same: no event, no action). One integrator at a time (the
process on SQLite, whichever replica holds the try-lock on PostgreSQL) takes the
pending events in write order (``id``), gives each the next leaf index, stores the
hashes that complete (broker/audit/merkle.py's stored-hash layout) and, when asked,
signs a checkpoint over the new size. Before it adds anything it checks that the
stored tree still matches the newest signed checkpoint and what this process last
integrated: a log cut or rewritten underneath stops it (:class:`AuditTampered`), and
nothing more is added until an operator has looked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.audit.checkpoints import LogIdentity, SignedCheckpoint
from broker.audit.events import HASHED
from broker.audit.leaves import leaf_data
from broker.audit.merkle import Appender, leaf_hash, stored_count, tree_hash
from broker.errors import AuditTampered
from broker.store import SqlTx

__all__ = ["Integrated", "check_tree", "integrate", "thin_cosigned"]


@dataclass(frozen=True)
class Integrated:
    size: int
    root: bytes
    added: int
    signed: SignedCheckpoint | None


def _body(row: dict[str, Any], seq: int) -> dict[str, Any]:
    body = {name: row.get(name) for name in HASHED}
    body["seq"] = seq
    body["detail"] = json.loads(row["detail"]) if row.get("detail") else {}
    return body


def check_tree(tx: SqlTx, size: int, floor: tuple[int, bytes] | None) -> None:
    """The stored tree of ``size`` events still agrees with the newest signed checkpoint,
    and with ``floor``, what this process integrated last (size, root): else the log was
    cut or rewritten underneath (AuditTampered, naming what)."""
    anchors = _anchors(tx, floor)
    for what, (at, _) in anchors:
        if at > size:
            raise AuditTampered(f"log truncated after event {size}: {what} covers {at} events")
    if tx.tree_hash_count() != stored_count(size):
        raise AuditTampered(
            f"the stored tree holds {tx.tree_hash_count()} hashes where a log of {size}"
            f" events holds {stored_count(size)}"
        )
    for what, (at, root) in anchors:
        try:
            if at and tree_hash(at, tx.tree_hashes) != root:
                raise AuditTampered(f"the stored tree no longer matches {what} (size {at})")
        except LookupError as exc:
            raise AuditTampered(f"the stored tree is incomplete: {exc}") from None


def _anchors(tx: SqlTx, floor: tuple[int, bytes] | None) -> list[tuple[str, tuple[int, bytes]]]:
    out: list[tuple[str, tuple[int, bytes]]] = []
    latest = tx.latest_note()
    if latest is not None:
        out.append(("the signed checkpoint", (int(latest["size"]), bytes(latest["root"]))))
    if floor is not None:
        out.append(("what this broker integrated", floor))
    return out


def integrate(
    tx: SqlTx,
    identity: LogIdentity | None,
    *,
    now: int,
    limit: int = 5000,
    sign: bool = True,
    floor: tuple[int, bytes] | None = None,
    adopting: bool = False,
    keep_every: int = 0,
) -> Integrated | None:
    """Place up to ``limit`` pending events, and sign a checkpoint if the log grew (and
    ``sign``). None when another replica is integrating now. ``adopting``: the events
    the hash chain left (``prev_hash`` set) may be placed; otherwise they must have
    been adopted first (broker/audit/log.py: ``AuditLog.upgrade``). ``keep_every``:
    thin the stored checkpoints to one per that many seconds (0: keep all)."""
    if not tx.try_integrator_lock():
        return None
    size = tx.log_size()
    check_tree(tx, size, floor)
    pending = tx.pending_audit(limit)
    appender = Appender.at(size, tx.tree_hashes)
    start = stored_count(size)
    hashes: list[bytes] = []
    placed: list[tuple[int, int, str]] = []
    for row in pending:
        prev = row.get("prev_hash")
        if prev is not None and not adopting:
            raise AuditTampered(
                "events of the hash chain wait to be adopted into the log (start the broker"
                " with migrations to adopt them)"
            )
        seq = appender.size + 1
        leaf = leaf_hash(leaf_data(_body(row, seq), prev))
        hashes.extend(appender.append(leaf))
        placed.append((int(row["id"]), seq, row["hash"] if prev is not None else leaf.hex()))
    if placed:
        tx.place_audit(placed)
        tx.insert_tree_hashes(start, hashes)
    root = appender.root()
    signed = None
    latest = tx.latest_note()
    if sign and identity is not None and appender.size > (int(latest["size"]) if latest else 0):
        signed = identity.sign(appender.size, root)
        if latest is not None:
            _thin(tx, latest, keep_every)
        tx.insert_note(signed.size, signed.root, signed.note.decode(), now)
    return Integrated(appender.size, root, len(placed), signed)


def _thin(tx: SqlTx, newest: dict[str, Any], keep_every: int) -> None:
    """A new checkpoint replaces the newest one, unless that one is ``keep_every``
    seconds or more after the checkpoint before it, or a witness cosigned it: the store
    keeps one checkpoint per ``keep_every`` besides the newest (each covers every event
    before it, so the others add nothing a verifier needs), and each witness's newest
    cosigned one (:func:`thin_cosigned` drops the older ones). Cosignatures are stored
    under the integrator's lock (broker/audit/log.py), so none arrives for a checkpoint
    deleted here."""
    if keep_every <= 0 or tx.has_cosignatures(int(newest["size"])):
        return
    before = tx.note_rows(to_size=int(newest["size"]) - 1, newest_first=True, limit=1)
    if before and int(newest["signed_at"]) - int(before[0]["signed_at"]) < keep_every:
        tx.delete_note(int(newest["size"]))


def thin_cosigned(tx: SqlTx, size: int, keep_every: int) -> bool:
    """Checkpoint ``size`` was cosigned, and a witness has just cosigned a newer one: it
    goes, with its cosignatures, unless it is still some witness's newest, or the store
    keeps it anyway (the first, the newest, or ``keep_every`` seconds or more after the
    checkpoint kept before it). So a witness that cosigns every minute leaves one
    checkpoint per ``keep_every`` behind it, not one a minute; its newer cosignature
    vouches for everything the dropped one did (it checked that the log only grew).
    Called under the integrator's lock. True when it went."""
    if keep_every <= 0 or tx.newest_of_a_witness(size):
        return False
    latest, note = tx.latest_note(), tx.note_at(size)
    if note is None or latest is None or int(latest["size"]) == size:
        return False
    before = tx.note_rows(to_size=size - 1, newest_first=True, limit=1)
    if not before or int(note["signed_at"]) - int(before[0]["signed_at"]) >= keep_every:
        return False
    tx.delete_cosignatures(size)
    tx.delete_note(size)
    return True
