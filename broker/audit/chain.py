"""The hash chain: event hashes, signed checkpoints, verification. Pure.

Every event's hash is SHA-256 over the canonical JSON of its hashed fields
(:data:`~broker.audit.events.HASHED`, absent values ``null``) *including* ``prev``,
the previous event's hash (64 zeros for the first event), so each event commits
to the whole history before it. A checkpoint ``{seq, head, at, kid}`` is signed
with the broker's Ed25519 audit key over its canonical JSON: it vouches for every
event up to ``seq``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.canonical import canonical
from broker.audit.events import HASHED, Record
from tailor.jose import b64url, b64url_decode

__all__ = [
    "GENESIS",
    "ChainEvent",
    "Checkpoint",
    "Report",
    "chain_event",
    "event_hash",
    "sign_checkpoint",
    "verify_chain",
]

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainEvent:
    """An event as stored: its fields, the previous hash, and its own hash.

    ``body`` is None for an event an export redacted (filtered out): only its
    links can then be checked, not its content.
    """

    seq: int
    prev: str
    hash: str
    body: dict[str, Any] | None


def chain_event(record: Record) -> ChainEvent:
    """A stored record as the chain checks it."""
    return ChainEvent(record.seq, str(record.prev_hash), str(record.hash), record.body())


def event_hash(body: Mapping[str, Any], prev: str) -> str:
    record = {name: body.get(name) for name in HASHED}
    record["detail"] = record["detail"] or {}
    record["prev"] = prev
    return hashlib.sha256(canonical(record)).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head: str
    at: str
    kid: str
    signature: str

    def payload(self) -> dict[str, Any]:
        """What the signature covers."""
        return {"seq": self.seq, "head": self.head, "at": self.at, "kid": self.kid}

    def row(self) -> dict[str, Any]:
        """As stored and exported: the payload and its signature."""
        return {**self.payload(), "signature": self.signature}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Checkpoint:
        return cls(
            int(row["seq"]),
            str(row["head"]),
            str(row["at"]),
            str(row["kid"]),
            str(row["signature"]),
        )


def sign_checkpoint(
    key: ed25519.Ed25519PrivateKey, kid: str, seq: int, head: str, at: str
) -> Checkpoint:
    payload = {"seq": seq, "head": head, "at": at, "kid": kid}
    return Checkpoint(seq, head, at, kid, b64url(key.sign(canonical(payload))))


def _signature_ok(cp: Checkpoint, keys: Mapping[str, ed25519.Ed25519PublicKey]) -> bool:
    key = keys.get(cp.kid)
    if key is None:
        return False
    try:
        raw = b64url_decode(cp.signature)
        key.verify(raw, canonical(cp.payload()))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class Report:
    events_total: int = 0
    events_valid: int = 0
    checkpoints_total: int = 0
    checkpoints_valid: int = 0
    signed_through: int = 0
    """The last event a valid signed checkpoint covers (0: none)."""
    events_unsigned: int = 0
    """Events after ``signed_through``: chained, but covered by no signed checkpoint yet
    (the newest events until the next checkpoint, or the tail a crash left unsigned).
    Their links and hashes verify, but anyone who can write the database could have
    rewritten them consistently: no signature vouches for them yet."""
    witnesses_required: int = 0
    """The cosignatures the auditor required on a checkpoint (0: no witness policy)."""
    witnessed_through: int = 0
    """The newest valid checkpoint that carries them (0: none)."""
    witnesses_found: int = 0
    """The given witnesses' valid cosignatures on it (or the most on any checkpoint, when
    none carries enough)."""
    problems: list[str] = field(default_factory=list)
    proved: list[str] = field(default_factory=list)
    """What each valid checkpoint proved, in order (the newest last)."""

    @property
    def intact(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = (
            f"{self.events_valid}/{self.events_total} events valid, "
            f"{self.checkpoints_valid}/{self.checkpoints_total} checkpoints valid, "
            f"{self.events_unsigned} events unsigned"
        )
        if self.events_unsigned:
            text += f" (after event {self.signed_through}, the last a signed checkpoint covers)"
        if self.witnessed_through:
            text += (
                f"; witnessed: checkpoint {self.witnessed_through} cosigned by"
                f" {self.witnesses_found} of the given witnesses ({self.witnesses_required}"
                " required)"
            )
            if self.witnessed_through < self.signed_through:
                text += f", the events after {self.witnessed_through} signed by the log alone"
        if self.problems:
            text += f"; first problem: {self.problems[0]}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "events_total": self.events_total,
            "events_valid": self.events_valid,
            "checkpoints_total": self.checkpoints_total,
            "checkpoints_valid": self.checkpoints_valid,
            "signed_through": self.signed_through,
            "events_unsigned": self.events_unsigned,
            "problems": self.problems[:20],
            "proved": self.proved[-20:],
            "summary": self.summary(),
        }


def verify_chain(
    events: Iterable[ChainEvent],
    checkpoints: Iterable[Checkpoint],
    keys: Mapping[str, ed25519.Ed25519PublicKey],
    *,
    anchor: str | None = GENESIS,
    expected_head: tuple[int, str] | None = None,
    locate: Callable[[str], int | None] | None = None,
) -> Report:
    """Check every link, every content hash and every checkpoint.

    ``events`` is read once, in order, and not kept: a stream from the store
    verifies a log of any length in constant memory (only the events that
    checkpoints and ``expected_head`` name are remembered). ``anchor`` is the
    ``prev`` the first event must carry (64 zeros for a log from its start; None
    for an export that starts later). ``expected_head`` is a (seq, hash) the log
    must reach, e.g. what the running broker last appended. ``locate(hash)`` finds
    the seq of an event by its hash, to tell a reordering from a broken link; a
    list of events is searched by default, a stream without it just reports the
    broken link.
    """
    report = Report()
    checkpoints = sorted(checkpoints, key=lambda c: c.seq)
    wanted = {cp.seq for cp in checkpoints}
    if expected_head is not None:
        wanted.add(expected_head[0])
    by_seq: dict[int, str] = {}  # seq -> hash, for the wanted seqs only
    if locate is None and isinstance(events, Sequence):
        locate = _list_locator(events)
    first_seq: int | None = None
    first_bad: int | None = None

    def bad(index: int, problem: str) -> None:
        nonlocal first_bad
        report.problems.append(problem)
        if first_bad is None:
            first_bad = index

    previous: ChainEvent | None = None
    index = -1
    for index, ev in enumerate(events):
        if ev.seq in wanted:
            by_seq.setdefault(ev.seq, ev.hash)
        if previous is None:
            first_seq = ev.seq
            if anchor is not None and ev.prev != anchor:
                bad(index, f"event {ev.seq}: the log does not start at the beginning of the chain")
        else:
            if ev.seq <= previous.seq:
                bad(index, f"events reordered: {ev.seq} comes after {previous.seq}")
            elif ev.seq != previous.seq + 1:
                missing = (
                    ev.seq - 1 if ev.seq == previous.seq + 2 else f"{previous.seq + 1}-{ev.seq - 1}"
                )
                bad(index, f"event {missing} missing (between {previous.seq} and {ev.seq})")
            elif ev.prev != previous.hash:
                found = locate(ev.prev) if locate is not None else None
                if found is not None and found != previous.seq:
                    bad(
                        index,
                        f"events reordered: event {ev.seq} follows event "
                        f"{found} in the chain, not {previous.seq}",
                    )
                else:
                    bad(index, f"event {ev.seq}: link to event {previous.seq} broken")
        if ev.body is not None:
            if ev.body.get("seq") != ev.seq or event_hash(ev.body, ev.prev) != ev.hash:
                bad(index, f"event {ev.seq} changed (its content does not match its hash)")
        previous = ev
    report.events_total = index + 1
    report.events_valid = first_bad if first_bad is not None else report.events_total

    last_seq = previous.seq if previous is not None else 0
    for cp in checkpoints:
        report.checkpoints_total += 1
        if not _signature_ok(cp, keys):
            report.problems.append(
                f"checkpoint {cp.seq}: signature invalid or by an unknown key ({cp.kid})"
            )
            continue
        target = by_seq.get(cp.seq)
        if target is None:
            if cp.seq > last_seq:
                report.problems.append(
                    f"log truncated after event {last_seq}: signed checkpoint {cp.seq} covers "
                    "events that are gone"
                )
            elif first_seq is not None and cp.seq >= first_seq:
                report.problems.append(f"checkpoint {cp.seq}: its event is missing")
            else:
                report.checkpoints_valid += 1  # before this export's range: nothing to check
                report.signed_through = max(report.signed_through, cp.seq)
            continue
        if target != cp.head:
            report.problems.append(
                f"checkpoint {cp.seq}: head does not match; events up to {cp.seq} were changed"
            )
            continue
        report.checkpoints_valid += 1
        report.signed_through = max(report.signed_through, cp.seq)

    # Events past the last valid checkpoint (of this range: an export may start later).
    if report.events_total:
        start = max(report.signed_through, (first_seq or 1) - 1)
        report.events_unsigned = min(report.events_total, max(0, last_seq - start))

    if expected_head is not None:
        seq, head = expected_head
        have = by_seq.get(seq)
        if have is None and seq > last_seq:
            report.problems.append(
                f"log truncated after event {last_seq}: the broker appended up to {seq}"
            )
        elif have is not None and have != head:
            report.problems.append(f"event {seq} is not the event the broker appended")
    return report


def _list_locator(events: Sequence[ChainEvent]) -> Callable[[str], int | None]:
    """Find an event's seq by its hash in a list, indexing it only when first asked."""
    index: dict[str, int] = {}

    def locate(digest: str) -> int | None:
        if not index:
            index.update((ev.hash, ev.seq) for ev in events)
        return index.get(digest)

    return locate
