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
from collections.abc import Callable, Iterable, Iterator, Sequence
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


Proved = tuple[LogEvent, list[bytes] | None]
"""An event of an export, with its inclusion proof (a filtered export's) or None."""

_EVENT_LINE = '{"body":'
"""How every event line begins (written with sorted keys), and no other line: the two
passes of a verification tell the lines apart by it without reading them."""


def _proof(value: object) -> list[bytes] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError
    return [base64.b64decode(str(h), validate=True) for h in value]


def _record(item: dict[str, Any]) -> tuple[str, Any]:
    """One line's record: ("header", dict), ("event", Proved) or ("checkpoint", bytes).
    Raises ValueError, KeyError or TypeError for anything else."""
    kind = item["type"]
    if kind == "header":
        if item.get("version") != VERSION:
            raise ExportError(
                f"an audit export of version {item.get('version')}; this broker reads"
                f" version {VERSION}"
            )
        return kind, item
    if kind == "event":
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
        return kind, (event, _proof(item.get("proof")))
    if kind == "checkpoint":
        return kind, str(item["note"]).encode()
    raise ValueError


def _records(lines: Iterable[str], events: bool | None = None) -> Iterator[tuple[str, Any]]:
    """The records of an export's lines, in order, the header first. ``events`` True:
    only the event lines are read (the others skipped unread, the header checked and not
    given); False: only the others; None: all."""
    first = True
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            is_event = line.startswith(_EVENT_LINE)
            if not first and events is not None and is_event != events:
                continue
            try:
                kind, value = _record(json.loads(line))
                if (kind == "event") != is_event:
                    raise ValueError  # not a line as the broker writes it
            except (ValueError, KeyError, TypeError, binascii.Error):
                if first:
                    raise ExportError("not an audit export (no header first)") from None
                raise ExportError(f"line {number} is not an audit export record") from None
            if first != (kind == "header"):
                if first:
                    raise ExportError("not an audit export (no header first)")
                raise ExportError(f"line {number} is not an audit export record")
            if first:
                first = False
                if events:
                    continue
            yield kind, value
    except UnicodeDecodeError as exc:
        raise ExportError(f"the export is not UTF-8 text: {exc.reason}") from None
    if first:
        raise ExportError("not an audit export (no header)")


def parse_export(lines: Iterable[str]) -> Parsed:
    """The whole export in memory (verification streams it: :func:`verify_export`)."""
    parsed: Parsed | None = None
    for kind, value in _records(lines):
        if kind == "header":
            parsed = Parsed(value)
        elif parsed is not None:
            (parsed.events if kind == "event" else parsed.notes).append(value)
    assert parsed is not None  # _records raised otherwise
    return parsed


Lines = Iterable[str] | Callable[[], Iterable[str]]
"""An export's lines, or what reads them afresh (a verification reads them twice)."""


def _file_lines(path: Path) -> Callable[[], Iterator[str]]:
    def read() -> Iterator[str]:
        try:
            # Lines end at "\n" only: U+2028 and friends are not line ends here.
            with path.open(encoding="utf-8", newline="\n") as f:
                for line in f:
                    yield line.removesuffix("\n")
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None

    return read


def verify_export_file(
    path: Path,
    identity: LogIdentity,
    trusted: Sequence[bytes] = (),
    policy: WitnessPolicy | None = None,
) -> Report:
    """:func:`verify_export` of the export in ``path``, read twice, a line at a time:
    memory does not grow with the export."""
    if not path.is_file():
        raise ExportError(f"cannot read {path}: no such file")
    return verify_export(_file_lines(path), identity, trusted, policy)


def verify_export(
    lines: Lines,
    identity: LogIdentity,
    trusted: Sequence[bytes] = (),
    policy: WitnessPolicy | None = None,
) -> Report:
    """Check an export offline: its seal and checkpoints, its events against them, and
    that the log only grew since each ``trusted`` checkpoint (notes the auditor kept).

    ``policy``: the cosignatures required. A complete export meets it with any of its
    checkpoints whose root the events give (the newest such is reported); a filtered
    one only with its seal, the one checkpoint its events are proven against.

    Two passes: the header and the checkpoints first (the checks need the notes before
    the events), then the events, streamed into the verification, none kept."""
    if callable(lines):
        read = lines
    else:
        kept_lines = lines if isinstance(lines, list | tuple) else list(lines)
        read = lambda: kept_lines  # noqa: E731
    header: dict[str, Any] = {}
    found: list[bytes] = []
    for kind, value in _records(read(), events=False):
        if kind == "header":
            header = value
        else:
            found.append(value)

    def events() -> Iterator[Proved]:
        for _, value in _records(read(), events=True):
            yield value

    size = header.get("size")
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
    notes = [*found, *kept]
    if header.get("complete"):
        checked = verify_log((e for e, _ in events()), notes, identity, policy=policy)
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
        report = _verify_filtered(events(), notes, identity, size, report, policy)
        if kept:
            report.problems.append(
                "a filtered export cannot prove the log only grew since a trusted checkpoint:"
                " verify a complete export"
            )
    if not any(_size_of(n) == size for n in found):
        report.problems.append(f"the export's seal (a checkpoint of size {size}) is missing")
    return report


def _size_of(note: bytes) -> int | None:
    try:
        return SignedCheckpoint.unverified(note).size
    except NoteError:
        return None


def _verify_filtered(
    events: Iterable[Proved],
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
    index = -1
    for index, (event, proof) in enumerate(events):
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
    report.events_total = index + 1
    report.events_valid = first_bad if first_bad is not None else report.events_total
    if seal is not None:
        report.signed_through = size
        if first_bad is None:
            report.proved.append(
                f"checkpoint {size} (the seal): each of the {report.events_total} events is"
                " in the log it signed"
            )
    return report
