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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from broker.audit import ChainEvent, Checkpoint

__all__ = ["ExportError", "Parsed", "export_lines", "parse_export"]

VERSION = 1


class ExportError(Exception):
    """The file is not an audit export this tool can read."""


def export_lines(
    events: Iterable[ChainEvent], checkpoints: Iterable[Checkpoint], filters: dict[str, Any],
    first_seq: int, last_seq: int, selected: set[int],
) -> Iterator[str]:  # fmt: skip
    header = {"type": "header", "version": VERSION, "first_seq": first_seq,
              "last_seq": last_seq, "filters": filters}  # fmt: skip
    yield json.dumps(header, sort_keys=True)
    for ev in events:
        line: dict[str, Any] = {"type": "event", "seq": ev.seq, "prev": ev.prev, "hash": ev.hash}
        if ev.seq in selected and ev.body is not None:
            line["body"] = ev.body
        else:
            line["redacted"] = True
        yield json.dumps(line, sort_keys=True, ensure_ascii=False)
    for cp in checkpoints:
        yield json.dumps({"type": "checkpoint", **cp.payload(), "signature": cp.signature},
                         sort_keys=True)  # fmt: skip


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
                events.append(ChainEvent(int(item["seq"]), str(item["prev"]), str(item["hash"]),
                                         body if isinstance(body, dict) else None))  # fmt: skip
            elif kind == "checkpoint":
                cp = Checkpoint(
                    int(item["seq"]), str(item["head"]), str(item["at"]), str(item["kid"]),
                    str(item["signature"]),
                )  # fmt: skip
                checkpoints.append(cp)
            else:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ExportError(f"line {number} is not an audit export record") from None
    if header is None or header.get("version") != VERSION:
        raise ExportError("not an audit export (no version 1 header)")
    return Parsed(header, events, checkpoints)
