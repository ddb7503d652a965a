"""The hash chain an older broker kept, checked once before it is adopted into the
tree (:meth:`broker.audit.log.AuditLog.upgrade`). Pure.

Every event's hash was SHA-256 over the canonical JSON of its hashed fields
(:data:`~broker.audit.events.HASHED`, absent values ``null``) *including* ``prev``,
the previous event's hash (64 zeros for the first event), so each event committed
to the whole history before it. Those bytes are the event's leaf in the tree
(broker/audit/leaves.py), so the chain's hashes stay checkable there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.audit.canonical import canonical
from broker.audit.events import HASHED

__all__ = ["GENESIS", "ChainCheck", "ChainEvent", "event_hash"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainEvent:
    """An event of the chain: its fields, the previous hash, and its own hash."""

    seq: int
    prev: str
    hash: str
    body: dict[str, Any]


def event_hash(body: Mapping[str, Any], prev: str) -> str:
    record = {name: body.get(name) for name in HASHED}
    record["detail"] = record["detail"] or {}
    record["prev"] = prev
    return hashlib.sha256(canonical(record)).hexdigest()


class ChainCheck:
    """A chain checked as it is read, one event at a time and none kept: each link,
    each content hash, the order. ``problem`` is the first thing wrong (None while the
    chain holds); ``head`` the last event read."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.head: ChainEvent | None = None
        self.count = 0

    def add(self, ev: ChainEvent) -> None:
        previous, self.head = self.head, ev
        self.count += 1
        if self.problem is not None:
            return
        if previous is None:
            if ev.prev != GENESIS:
                self.problem = f"event {ev.seq}: the chain does not start at its beginning"
        elif ev.seq != previous.seq + 1:
            self.problem = f"event {ev.seq} follows event {previous.seq}: missing or reordered"
        elif ev.prev != previous.hash:
            self.problem = f"event {ev.seq}: link to event {previous.seq} broken"
        if self.problem is None and (
            ev.body.get("seq") != ev.seq or event_hash(ev.body, ev.prev) != ev.hash
        ):
            self.problem = f"event {ev.seq} changed (its content does not match its hash)"
