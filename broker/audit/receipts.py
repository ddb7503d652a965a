"""A staging's receipt: its own events, each proven to be in the signed log, verifiable
offline by the app team without seeing anyone else's events.

A receipt is a folder with, for each of the staging's events, ``INDEX.entry`` (the
exact leaf bytes, broker/audit/leaves.py) and ``INDEX.tlog-proof`` (C2SP tlog-proof:
the index, the inclusion proof and the signed checkpoint verbatim, cosignatures
included), ``INDEX`` being the event's leaf index (``seq`` - 1). Anyone with the log's
verifier key checks it: the checkpoint's signature, then the entry's leaf hash against
the proof and the checkpoint's root (the Go checksum database's ``tlog.CheckRecord``
does the same with ``tlog.RecordHash``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from broker.audit.checkpoints import LogIdentity, SignedCheckpoint
from broker.audit.cosignatures import Cosignatures
from broker.audit.leaves import leaf_data
from broker.audit.log import AuditLog
from broker.audit.merkle import ProofError, leaf_hash, verify_inclusion
from broker.audit.note import NoteError, TlogProof, parse_tlog_proof
from broker.audit.query import make_filter
from broker.errors import ExportError, NotFound

__all__ = ["Receipt", "ReceiptEntry", "receipt", "verify_receipt", "write_receipt"]

MAX_EVENTS = 1000
"""A staging has a handful of events; a receipt holds at most this many."""


@dataclass(frozen=True)
class ReceiptEntry:
    index: int
    entry: bytes
    """The leaf bytes: canonical JSON of the event."""
    proof: TlogProof


@dataclass(frozen=True)
class Receipt:
    staging_guid: str
    checkpoint: SignedCheckpoint
    entries: list[ReceiptEntry]


def receipt(audit: AuditLog, cosignatures: Cosignatures, staging_guid: str) -> Receipt:
    """The staging's events, each with its inclusion proof in a checkpoint that covers
    them all: the newest one a registered witness cosigned, else the newest one (the note
    as served, cosignatures included), so an app team can require witnesses too."""
    records = audit.page(0, MAX_EVENTS, make_filter(staging=staging_guid))
    if not records:
        raise NotFound(f"no audit events for staging {staging_guid}")
    latest = audit.latest()
    if latest is None or latest.size < records[-1].seq:
        raise NotFound("the log has no checkpoint covering these events yet")
    size = cosignatures.newest_cosigned(at_least=records[-1].seq) or latest.size
    note = cosignatures.cosigned(size) or latest.note
    checkpoint = SignedCheckpoint.unverified(note)
    entries = []
    for record in records:
        index = record.seq - 1
        proof = audit.inclusion(index, checkpoint.size)
        data = leaf_data(record.body(), record.prev_hash)
        entries.append(ReceiptEntry(index, data, TlogProof(index, proof, note)))
    return Receipt(staging_guid, checkpoint, entries)


def write_receipt(done: Receipt, out: Path) -> list[Path]:
    """Write the receipt's files into ``out`` (created; existing files are not replaced)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for e in done.entries:
        for suffix, data in ((".entry", e.entry), (".tlog-proof", e.proof.format())):
            path = out / f"{e.index}{suffix}"
            with path.open("xb") as f:
                f.write(data)
            written.append(path)
    return written


def verify_receipt(folder: Path, identity: LogIdentity) -> tuple[int, list[str]]:
    """Check every ``INDEX.entry`` against its ``INDEX.tlog-proof``: (entries checked,
    problems). A problem names the file and what failed."""
    problems: list[str] = []
    entries = sorted(folder.glob("*.entry"), key=lambda p: (len(p.stem), p.stem))
    if not entries:
        raise ExportError(f"{folder} holds no .entry files")
    for path in entries:
        proof_path = path.with_suffix(".tlog-proof")
        try:
            data = path.read_bytes()
            proof = parse_tlog_proof(proof_path.read_bytes())
        except OSError as exc:
            problems.append(f"{path.name}: cannot read it or its proof: {exc.strerror}")
            continue
        except NoteError as exc:
            problems.append(f"{proof_path.name}: not a tlog-proof ({exc})")
            continue
        if str(proof.index) != path.stem:
            problems.append(f"{proof_path.name}: proves index {proof.index}, not {path.stem}")
            continue
        try:
            signed = identity.open(proof.checkpoint)
        except NoteError as exc:
            problems.append(f"{proof_path.name}: checkpoint does not verify ({exc})")
            continue
        try:
            verify_inclusion(proof.index, signed.size, leaf_hash(data), proof.proof, signed.root)
        except ProofError as exc:
            problems.append(f"{path.name}: not in the signed log ({exc})")
            continue
        try:
            seq = json.loads(data).get("seq")
        except (ValueError, AttributeError):
            seq = None
        if seq != proof.index + 1:
            problems.append(f"{path.name}: its seq is not its place in the log")
    return len(entries), problems
