"""The audit export: JSON lines an auditor can verify offline with only a public key.

Line 1 is a header; then every event from the first selected one to the head
(events the filters did not select are *redacted*: seq, prev and hash only, so
the links still check); then the checkpoints in that range, including a fresh
one over the head signed at export time (the seal: it makes a truncated export
detectable).

    {"type": "header", "version": 1, "first_seq": 41, "last_seq": 97, "filters": {...}}
    {"type": "event", "seq": 41, "prev": "...", "hash": "...", "body": {...}}
    {"type": "event", "seq": 42, "prev": "...", "hash": "...", "redacted": true}
    {"type": "checkpoint", "seq": 97, "head": "...", "at": "...", "kid": "...", "signature": "..."}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.chain import GENESIS, ChainEvent, Checkpoint, Report, verify_chain
from broker.errors import ExportError

__all__ = ["Parsed", "export_lines", "parse_export", "verify_export", "verify_export_file"]

VERSION = 1


def export_lines(
    events: Iterable[ChainEvent],
    checkpoints: Iterable[Checkpoint],
    filters: dict[str, Any],
    first_seq: int,
    last_seq: int,
    selected: set[int],
) -> Iterator[str]:
    header = {
        "type": "header",
        "version": VERSION,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "filters": filters,
    }
    yield json.dumps(header, sort_keys=True)
    for ev in events:
        line: dict[str, Any] = {"type": "event", "seq": ev.seq, "prev": ev.prev, "hash": ev.hash}
        if ev.seq in selected and ev.body is not None:
            line["body"] = ev.body
        else:
            line["redacted"] = True
        # ASCII only: U+2028, U+0085 and friends, which readers may take for line ends,
        # travel as escapes (the hashes cover the decoded values, not these bytes).
        yield json.dumps(line, sort_keys=True)
    for cp in checkpoints:
        yield json.dumps({"type": "checkpoint", **cp.row()}, sort_keys=True)


@dataclass
class Parsed:
    header: dict[str, Any]
    events: list[ChainEvent]
    checkpoints: list[Checkpoint]


def parse_export(lines: Iterable[str]) -> Parsed:
    header: dict[str, Any] | None = None
    events: list[ChainEvent] = []
    checkpoints: list[Checkpoint] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item["type"]
            if kind == "header":
                header = item
            elif kind == "event":
                body = item.get("body")
                body = body if isinstance(body, dict) else None
                events.append(
                    ChainEvent(int(item["seq"]), str(item["prev"]), str(item["hash"]), body)
                )
            elif kind == "checkpoint":
                checkpoints.append(Checkpoint.from_row(item))
            else:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ExportError(f"line {number} is not an audit export record") from None
    if header is None or header.get("version") != VERSION:
        raise ExportError("not an audit export (no version 1 header)")
    return Parsed(header, events, checkpoints)


def verify_export_file(path: Path, keys: Mapping[str, ed25519.Ed25519PublicKey]) -> Report:
    """:func:`verify_export` of the export in ``path``."""
    try:
        # Lines end at "\n" only: splitlines() would also split at U+2028 and others.
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {getattr(exc, 'strerror', exc)}") from None
    return verify_export(lines, keys)


def verify_export(lines: Iterable[str], keys: Mapping[str, ed25519.Ed25519PublicKey]) -> Report:
    """Check an export offline: every link, body and checkpoint, and that its seal is there."""
    parsed = parse_export(lines)
    events = parsed.events
    anchor = GENESIS if events and events[0].seq == 1 else None
    report = verify_chain(events, parsed.checkpoints, keys, anchor=anchor)
    last = parsed.header.get("last_seq")
    if isinstance(last, int) and last and not any(c.seq == last for c in parsed.checkpoints):
        report.problems.append(f"the export's seal (a checkpoint at event {last}) is missing")
    return report
