"""The audit export: JSON lines an auditor verifies offline with only the log's verifier key.

Line 1 is a header; then the events; then the log's signed checkpoints (C2SP
checkpoint notes, verbatim) up to the *seal*, the checkpoint signed at export time
over the whole log, which comes last.

    {"type": "header", "version": 2, "origin": "...", "size": 97, "complete": true,
     "filters": {}}
    {"type": "event", "seq": 1, "body": {...}, "hash": "..."}
    {"type": "checkpoint", "note": "stager.example.com/audit\\n97\\n...\\n\\n— ..."}

A *complete* export (no filters) holds every event from 1 to ``size``: the verifier
recomputes the tree and checks every checkpoint's root against it, so an event
changed, removed, added or moved, or a log cut before the seal, is found; with a
checkpoint kept from before (``--trusted-checkpoint``) it also proves the log only
grew since. A *filtered* export holds only the selected events, each with its
inclusion proof (``proof``: base64 hashes, RFC 6962 order) in the seal's tree: each
is proven in the log, and nothing else is revealed. An event of the old hash chain
also carries ``prev`` (its leaf covers it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.audit.checkpoints import LogIdentity, SignedCheckpoint
from broker.audit.events import Record
from broker.audit.leaves import leaf_data
from broker.audit.merkle import ProofError, leaf_hash, verify_inclusion
from broker.audit.note import NoteError
from broker.audit.verify import LogEvent, Report, check_notes, verify_log
from broker.audit.witnesses import WitnessPolicy
from broker.errors import ExportError

__all__ = ["Parsed", "export_lines", "parse_export", "verify_export", "verify_export_file"]

VERSION = 2


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def export_lines(
    events: Iterable[tuple[Record, list[bytes] | None]],
    seal: SignedCheckpoint,
    notes: Sequence[bytes],
    filters: dict[str, Any],
    complete: bool,
) -> Iterator[str]:
    header = {
        "type": "header",
        "version": VERSION,
        "origin": seal.checkpoint.origin,
        "size": seal.size,
        "complete": complete,
        "filters": filters,
    }
    yield json.dumps(header, sort_keys=True)
    for record, proof in events:
        line: dict[str, Any] = {"type": "event", "seq": record.seq, "body": record.body()}
        line["hash"] = record.hash
        if record.prev_hash is not None:
            line["prev"] = record.prev_hash
        if proof is not None:
            line["proof"] = [_b64(h) for h in proof]
        # ASCII only: U+2028, U+0085 and friends, which readers may take for line ends,
        # travel as escapes (the hashes cover the decoded values, not these bytes).
        yield json.dumps(line, sort_keys=True)
    for note in [*(n for n in notes if n != seal.note), seal.note]:
        yield json.dumps({"type": "checkpoint", "note": note.decode()}, sort_keys=True)


@dataclass
class Parsed:
    header: dict[str, Any]
    events: list[tuple[LogEvent, list[bytes] | None]] = field(default_factory=list)
    notes: list[bytes] = field(default_factory=list)


def _proof(value: object) -> list[bytes] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError
    return [base64.b64decode(str(h), validate=True) for h in value]


def parse_export(lines: Iterable[str]) -> Parsed:
    parsed: Parsed | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item["type"]
            if kind == "header":
                if item.get("version") != VERSION:
                    raise ExportError(
                        f"an audit export of version {item.get('version')}; this broker reads"
                        f" version {VERSION}"
                    )
                parsed = Parsed(item)
            elif parsed is None:
                raise ExportError("not an audit export (no header first)")
            elif kind == "event":
                body = item["body"]
                if not isinstance(body, dict):
                    raise ValueError
                prev = item.get("prev")
                event = LogEvent(
                    int(item["seq"]),
                    body,
                    str(prev) if prev is not None else None,
                    str(item["hash"]) if item.get("hash") is not None else None,
                )
                parsed.events.append((event, _proof(item.get("proof"))))
            elif kind == "checkpoint":
                parsed.notes.append(str(item["note"]).encode())
            else:
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ExportError(f"line {number} is not an audit export record") from None
    if parsed is None:
        raise ExportError("not an audit export (no header)")
    return parsed


def verify_export_file(
    path: Path,
    identity: LogIdentity,
    trusted: Sequence[bytes] = (),
    policy: WitnessPolicy | None = None,
) -> Report:
    """:func:`verify_export` of the export in ``path``."""
    try:
        # Lines end at "\n" only: splitlines() would also split at U+2028 and others.
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {getattr(exc, 'strerror', exc)}") from None
    return verify_export(lines, identity, trusted, policy)


def verify_export(
    lines: Iterable[str],
    identity: LogIdentity,
    trusted: Sequence[bytes] = (),
    policy: WitnessPolicy | None = None,
) -> Report:
    """Check an export offline: its seal and checkpoints, its events against them, and
    that the log only grew since each ``trusted`` checkpoint (notes the auditor kept).

    ``policy``: the cosignatures required. A complete export meets it with any of its
    checkpoints whose root the events give (the newest such is reported); a filtered
    one only with its seal, the one checkpoint its events are proven against."""
    parsed = parse_export(lines)
    size = parsed.header.get("size")
    if not isinstance(size, int) or size < 0:
        raise ExportError("the export's header names no size")
    kept: list[bytes] = []
    report = Report()
    for note in trusted:
        try:
            old = identity.open(note)
        except NoteError as exc:
            report.problems.append(f"the trusted checkpoint does not verify: {exc}")
            continue
        if old.size > size:
            report.problems.append(
                f"the export ends at {size} events, before the trusted checkpoint of size"
                f" {old.size}: the log was truncated (or the export is older)"
            )
            continue
        kept.append(note)
    notes = [*parsed.notes, *kept]
    if parsed.header.get("complete"):
        checked = verify_log((e for e, _ in parsed.events), notes, identity, policy=policy)
        checked.problems[:0] = report.problems
        report = checked
        for note in kept:
            old = identity.open(note)
            if f"checkpoint {old.size}: events 1-{old.size} are the ones it signed" in (
                report.proved
            ):
                report.proved.append(
                    f"trusted checkpoint {old.size}: the log only grew since (the export's"
                    f" first {old.size} events have its root)"
                )
    else:
        report = _verify_filtered(parsed, notes, identity, size, report, policy)
        if kept:
            report.problems.append(
                "a filtered export cannot prove the log only grew since a trusted checkpoint:"
                " verify a complete export"
            )
    if not any(_size_of(n) == size for n in parsed.notes):
        report.problems.append(f"the export's seal (a checkpoint of size {size}) is missing")
    return report


def _size_of(note: bytes) -> int | None:
    try:
        return SignedCheckpoint.unverified(note).size
    except NoteError:
        return None


def _verify_filtered(
    parsed: Parsed,
    notes: list[bytes],
    identity: LogIdentity,
    size: int,
    report: Report,
    policy: WitnessPolicy | None,
) -> Report:
    good = {cp.size: cp for cp in check_notes(notes, identity, report)}
    report.checkpoints_valid = len(good)
    seal = good.get(size)
    if policy is not None:
        report.witnesses_required = policy.required
        found = policy.count(seal.note, identity.verifiers) if seal is not None else 0
        report.witnesses_found = found
        if found >= policy.required:
            report.witnessed_through = size
        else:
            report.problems.append(
                f"witnesses: the seal is cosigned by {found} of the {len(policy.witnesses)}"
                f" given witnesses, {policy.required} required (a filtered export proves its"
                " events against its seal only: verify a complete export to count an earlier"
                " cosigned checkpoint)"
            )
    first_bad: int | None = None
    for index, (event, proof) in enumerate(parsed.events):
        problem = None
        if seal is None:
            problem = f"event {event.seq}: no valid seal to prove it against"
        elif event.body.get("seq") != event.seq:
            problem = f"event {event.seq} changed (its content does not match its place)"
        else:
            try:
                leaf = leaf_hash(leaf_data(event.body, event.prev))
                verify_inclusion(event.seq - 1, size, leaf, proof or [], seal.root)
            except ProofError:
                problem = f"event {event.seq} is not in the log the seal signs (or was changed)"
            except ValueError as exc:  # a float, say: no event any broker wrote
                problem = (
                    f"event {event.seq} changed (its content cannot be read as an event: {exc})"
                )
        if problem is not None:
            report.problems.append(problem)
            first_bad = index if first_bad is None else first_bad
    report.events_total = len(parsed.events)
    report.events_valid = first_bad if first_bad is not None else report.events_total
    if seal is not None:
        report.signed_through = size
        if first_bad is None:
            report.proved.append(
                f"checkpoint {size} (the seal): each of the {len(parsed.events)} events is in"
                " the log it signed"
            )
    return report
