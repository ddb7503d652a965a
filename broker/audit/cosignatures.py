"""The witnesses' cosignatures, kept by the log: accepted when a witness posts them,
served appended to the checkpoints they cosign, and each registered witness's newest.

What a posted cosignature must be, and the auditor's witness policy, are pure and live
in broker/audit/witnesses.py; registering and removing witnesses (audit events) is
broker/service/witnesses.py; the witness itself is broker/audit/witness.py. The notes the
log's verification and export read carry the cosignatures too (:func:`cosigned_notes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.audit.checkpoints import LogIdentity
from broker.audit.integrator import thin_cosigned
from broker.audit.merkle import tree_hash
from broker.audit.note import NoteError, add_signatures, parse_note
from broker.audit.witnesses import Cosignature, check_cosignatures, parse_posted, witness_key
from broker.errors import Conflict, Invalid, SetupError
from broker.store import SqlTx, Store

__all__ = ["Cosignatures", "Cosigned", "WitnessStatus", "cosigned_notes"]


@dataclass(frozen=True)
class WitnessStatus:
    """A registered witness, and its newest cosignature the log kept (if any)."""

    vkey: str
    name: str
    added_at: int
    last_size: int | None
    """The largest checkpoint it cosigned."""
    last_cosigned_at: int | None
    """Its newest cosignature's timestamp (the witness's clock)."""


@dataclass(frozen=True)
class Cosigned:
    """What a posted cosigned checkpoint added: its size, and per cosignature whether it
    was kept (False: the witness's cosignature of that size kept already is as new)."""

    size: int
    accepted: list[tuple[Cosignature, bool]]


def cosigned_notes(tx: SqlTx, rows: list[dict[str, Any]]) -> list[bytes]:
    """The stored notes, each with its registered witnesses' cosignatures appended."""
    if not rows:
        return []
    lines: dict[int, list[str]] = {}
    sizes = [int(r["size"]) for r in rows]
    for c in tx.cosignature_rows(min(sizes), max(sizes)):
        lines.setdefault(int(c["size"]), []).append(str(c["line"]))
    out = []
    for row, size in zip(rows, sizes, strict=True):
        note = str(row["note"]).encode()
        out.append(add_signatures(note, lines[size]) if size in lines else note)
    return out


class Cosignatures:
    """One store's cosignatures of the checkpoints of the log ``origin``. Without
    ``identity`` (a reader's: no key material) they can be read, not accepted."""

    def __init__(
        self,
        store: Store,
        identity: LogIdentity | None,
        *,
        origin: str,
        keep_every: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._identity = identity
        self._origin = origin
        self._keep_every = keep_every
        self._clock = clock

    def _signing(self) -> LogIdentity:
        if self._identity is None:
            raise SetupError("this audit log is opened to read only: no audit signing key")
        return self._identity

    def cosigned(self, size: int | None = None) -> bytes | None:
        """The newest checkpoint note (or the one of ``size``, if the store kept it) with
        its registered witnesses' cosignatures appended; None when there is none."""
        with self._store.transaction(write=False) as tx:
            row = tx.latest_note() if size is None else tx.note_at(size)
            return cosigned_notes(tx, [row])[0] if row is not None else None

    def newest_cosigned(self, at_least: int) -> int | None:
        """The size of the newest kept checkpoint of at least ``at_least`` events that a
        registered witness cosigned, if any."""
        with self._store.transaction(write=False) as tx:
            return tx.newest_cosigned_size(at_least)

    def witnesses(self) -> list[WitnessStatus]:
        """The registered witnesses, by name, with their newest cosignatures."""
        with self._store.transaction(write=False) as tx:
            rows = tx.witness_rows()
            activity = tx.witness_activity()
        out = []
        for row in rows:
            last = activity.get(str(row["vkey"]))
            out.append(
                WitnessStatus(
                    str(row["vkey"]),
                    str(row["name"]),
                    int(row["added_at"]),
                    last[0] if last else None,
                    last[1] if last else None,
                )
            )
        return out

    def accept(self, body: bytes) -> Cosigned:
        """Keep the cosignatures a witness posted (see broker/audit/witnesses.py): valid,
        by registered witnesses, of a checkpoint this log signed and keeps. All or none:
        Invalid names the first problem; Conflict when the log signed that checkpoint
        but has since replaced it with a newer one (cosign the newest).

        Everything is checked in a read transaction first, the signatures outside any:
        only a cosignature newer than the one kept takes the integrator's lock to be
        stored, so a flood of garbage or of replayed cosignatures cannot hold up the
        integrator (or the store's one writer, with SQLite)."""
        identity = self._signing()
        try:
            posted = parse_posted(body)
        except NoteError as exc:
            raise Invalid(f"not a cosigned checkpoint: {exc}") from None
        checkpoint = posted.checkpoint
        if checkpoint.origin != self._origin:
            raise Invalid(f"a checkpoint of another log ({checkpoint.origin[:100]})")
        with self._store.transaction(write=False) as tx:
            signed_text = _signed_text(tx, checkpoint.size, checkpoint.root)
            witnesses = [witness_key(str(w["vkey"])) for w in tx.witness_rows()]
            kept = tx.cosignature_times(checkpoint.size)
        now = int(self._clock())
        try:
            found = check_cosignatures(posted, signed_text, identity.verifiers, witnesses, now)
        except NoteError as exc:
            raise Invalid(str(exc)) from None
        new = [c for c in found if c.timestamp > kept.get(c.witness.vkey(), -1)]
        stored: set[str] = set()
        if new:
            with self._store.transaction() as tx:
                # Under the integrator's lock: no thinning deletes the note meanwhile, and
                # none after this commits (it keeps each witness's newest cosigned one).
                tx.wait_integrator_lock()
                if _signed_text(tx, checkpoint.size, checkpoint.root) != signed_text:
                    raise Invalid(f"the log's checkpoint {checkpoint.size} changed meanwhile")
                for c in new:
                    line = c.line.removesuffix("\n")
                    vkey = c.witness.vkey()
                    if tx.put_cosignature(checkpoint.size, vkey, c.timestamp, line, now):
                        stored.add(vkey)
                for vkey in stored:  # the checkpoint each cosigned before may go now
                    before = tx.previous_cosigned(vkey, checkpoint.size)
                    if before is not None:
                        thin_cosigned(tx, before, self._keep_every)
        return Cosigned(checkpoint.size, [(c, c.witness.vkey() in stored) for c in found])


def _signed_text(tx: SqlTx, size: int, root: bytes) -> str:
    """The text of the stored note of ``size``; Conflict or Invalid if there is none."""
    row = tx.note_at(size)
    if row is None:
        raise _not_kept(tx, size, root)
    return parse_note(str(row["note"]).encode())[0]


def _not_kept(tx: SqlTx, size: int, root: bytes) -> Exception:
    """Why there is no stored note of ``size``: replaced by a newer one (the tree of
    ``size`` has that root), or this log never signed such a checkpoint."""
    if size <= tx.log_size():
        try:
            replaced = tree_hash(size, tx.tree_hashes) == root
        except LookupError:
            replaced = False
        if replaced:
            return Conflict(
                f"the log no longer keeps checkpoint {size}: it signed a newer one;"
                " cosign the newest (GET /v1/audit/checkpoint)"
            )
    return Invalid(f"this log signed no checkpoint of size {size} with that root")
