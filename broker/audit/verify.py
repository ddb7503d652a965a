"""Checking the log: its events against its tree and its signed checkpoints. Pure.

The events are read once, in order, and not kept: a log of any length is checked in
constant memory (a :class:`~broker.audit.merkle.RootBuilder` holds log2(n) hashes).
Each event's leaf (broker/audit/leaves.py) is hashed and added to the tree; at each
signed checkpoint's size the root so far must be the checkpoint's root. So one valid
signature vouches for every event up to its size: an event changed, removed, added or
moved anywhere before it changes the root. What is named along the way (a gap in
``seq``, an event whose leaf no longer matches the hash stored with it, a broken link
of the old hash chain) says where; the roots say whether.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.audit.checkpoints import LogIdentity, SignedCheckpoint
from broker.audit.leaves import COLUMNS, column_leaf, leaf_data
from broker.audit.merkle import RootBuilder, leaf_hash
from broker.audit.note import NoteError
from broker.audit.witnesses import WitnessPolicy

__all__ = [
    "LogEvent",
    "Report",
    "check_notes",
    "log_event",
    "verify_log",
    "verify_rows",
    "witnessed",
]


@dataclass
class Report:
    events_total: int = 0
    events_valid: int = 0
    checkpoints_total: int = 0
    checkpoints_valid: int = 0
    signed_through: int = 0
    """The last event a valid signed checkpoint covers (0: none)."""
    events_unsigned: int = 0
    """Events after ``signed_through``: in the tree, but covered by no signed checkpoint yet
    (the newest events until the next checkpoint, or the tail a crash left unsigned).
    Their leaves are in the tree, but anyone who can write the database could have
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


@dataclass(frozen=True)
class LogEvent:
    """An event as the log holds it: its body (``seq`` included), the old chain's
    ``prev`` and ``hash`` for an event written before the tree (else ``prev`` None), and
    the hash stored with it (the leaf hash, hex; the chain hash for an old event)."""

    seq: int
    body: dict[str, Any]
    prev: str | None
    hash: str | None


def check_notes(
    notes: Iterable[bytes], identity: LogIdentity, report: Report
) -> list[SignedCheckpoint]:
    """The notes whose signature verifies, by size; the others are problems."""
    good: dict[int, SignedCheckpoint] = {}
    for note in notes:
        report.checkpoints_total += 1
        try:
            signed = identity.open(note)
        except NoteError as exc:
            report.problems.append(f"checkpoint: signature invalid or by an unknown key ({exc})")
            continue
        if signed.size in good and good[signed.size].root != signed.root:
            report.problems.append(
                f"two signed checkpoints of size {signed.size} with different roots (a fork)"
            )
            continue
        good[signed.size] = signed
    return [good[size] for size in sorted(good)]


def witnessed(
    report: Report,
    checkpoints: Iterable[SignedCheckpoint],
    identity: LogIdentity,
    policy: WitnessPolicy,
) -> None:
    """Apply the witness policy to the ``checkpoints`` (valid ones, whose roots the
    verification checked): the newest with enough cosignatures is the one witnessed;
    when there is none, a problem that says how many were found."""
    report.witnesses_required = policy.required
    most, most_at = 0, 0
    for cp in sorted(checkpoints, key=lambda c: c.size, reverse=True):  # the newest first
        found = policy.count(cp.note, identity.verifiers)
        if found >= policy.required:
            report.witnessed_through, report.witnesses_found = cp.size, found
            return
        if found > most:
            most, most_at = found, cp.size
    report.witnesses_found = most
    if most:
        found_text = f"at most {most}, on checkpoint {most_at}"
    else:
        found_text = "none found"
    report.problems.append(
        f"witnesses: no checkpoint is cosigned by {policy.required} of the"
        f" {len(policy.witnesses)} given witnesses ({found_text})"
    )


class _Verifier:
    """One verification in progress: events go in one by one (:meth:`event`) or a page
    of stored rows at a time (:meth:`rows`); :meth:`report` ends it."""

    def __init__(
        self,
        notes: Iterable[bytes],
        identity: LogIdentity,
        expected: tuple[int, bytes] | None,
        first_seq: int,
    ) -> None:
        self.result = Report()
        self.identity = identity
        self.expected = expected
        self.matched: list[SignedCheckpoint] = []
        self.at_size: dict[int, list[SignedCheckpoint]] = {}
        for cp in check_notes(notes, identity, self.result):
            self.at_size.setdefault(cp.size, []).append(cp)
        self.builder = RootBuilder()
        self.next_seq = first_seq
        """The ``seq`` the next event must have."""
        self.last_seq: int | None = None
        self.chain_hash: str | None = None
        self.first_bad: int | None = None
        self.settle(0)

    def bad(self, problem: str, at: int | None = None) -> None:
        """A problem, first seen at the event of index ``at`` (the one being read)."""
        self.result.problems.append(problem)
        if self.first_bad is None:
            self.first_bad = self.builder.size if at is None else at

    def settle(self, size: int) -> None:
        """The checks due at ``size`` events: the signed checkpoints of that size, and what
        this broker integrated."""
        root = self.builder.root
        expected = self.expected
        last = max(size - 1, 0)  # the event just added
        if expected is not None and expected[0] == size and root() != expected[1]:
            self.bad(f"the log up to event {size} is not the log this broker integrated", last)
        for cp in self.at_size.pop(size, ()):
            if root() != cp.root:
                self.bad(
                    f"checkpoint {size}: root does not match; events up to {size} were changed",
                    last,
                )
            else:
                report = self.result
                report.checkpoints_valid += 1
                report.signed_through = max(report.signed_through, size)
                report.proved.append(f"checkpoint {size}: events 1-{size} are the ones it signed")
                self.matched.append(cp)

    def event(self, ev: LogEvent) -> None:
        """Check one event and add its leaf."""
        if self.last_seq is not None and ev.seq <= self.last_seq:
            self.bad(f"events reordered: {ev.seq} comes after {self.last_seq}")
        elif ev.seq != self.next_seq:
            low = self.next_seq - 1
            missing = ev.seq - 1 if ev.seq == low + 2 else f"{low + 1}-{ev.seq - 1}"
            self.bad(f"event {missing} missing (between {low} and {ev.seq})")
        if ev.body.get("seq") != ev.seq:
            self.bad(f"event {ev.seq} changed (its content does not match its place)")
        try:
            data = leaf_data(ev.body, ev.prev)
        except ValueError as exc:
            # Not an event any broker wrote (bytes where text belongs, a float): named,
            # and something else stands in its place, so the roots after it fail too.
            self.bad(f"event {ev.seq} changed (its content cannot be read as an event: {exc})")
            data = repr(ev.body).encode()
        leaf = leaf_hash(data)
        if ev.prev is not None:
            # An event of the old hash chain: its links and its hash, as before.
            if hashlib.sha256(data).hexdigest() != ev.hash:
                self.bad(f"event {ev.seq} changed (its content does not match its hash)")
            elif self.chain_hash is not None and ev.prev != self.chain_hash:
                self.bad(f"event {ev.seq}: link to event {ev.seq - 1} broken")
            self.chain_hash = ev.hash
        elif ev.hash is not None and ev.hash != leaf.hex():
            self.bad(f"event {ev.seq} changed (its content does not match its hash)")
        self.builder.add(leaf)
        self.settle(self.builder.size)
        self.last_seq, self.next_seq = ev.seq, ev.seq + 1

    def rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Check a page of stored rows (the columns :data:`~broker.audit.leaves.COLUMNS`,
        then the old chain's ``prev`` and the stored hash).

        The fast path, for an event in its place whose leaf made straight from its columns
        (:func:`~broker.audit.leaves.column_leaf`) hashes to the hash stored with it: its
        leaf hash goes in the tree, unchanged from what :meth:`event` would add. Any other
        row (an event of the old chain, one out of place, one that does not hash to what
        is stored, one the fast form cannot read) goes through :meth:`event`, which names
        what is wrong. The fast path trusts nothing stored: the tree gets the hash of the
        bytes made from the columns, and the checkpoints' roots judge them."""
        builder, at_size, expected = self.builder, self.at_size, self.expected
        due = expected[0] if expected is not None else -1
        sha, prefix = hashlib.sha256, b"\x00"
        for row in rows:
            seq = row[0]
            if seq == self.next_seq and row[-2] is None and type(seq) is int:
                try:
                    leaf = sha(prefix + column_leaf(row)).digest()
                except (TypeError, UnicodeEncodeError):
                    leaf = b""
                if leaf and leaf.hex() == row[-1]:
                    builder.add(leaf)
                    self.last_seq, self.next_seq = seq, seq + 1
                    size = builder.size
                    if size in at_size or size == due:
                        self.settle(size)
                    continue
            self.event(log_event(row))

    def report(
        self,
        stored_root: Callable[[int], bytes] | None,
        policy: WitnessPolicy | None,
    ) -> Report:
        report, size = self.result, self.builder.size
        report.events_total = size
        report.events_valid = self.first_bad if self.first_bad is not None else size
        for cp in sorted((c for cs in self.at_size.values() for c in cs), key=lambda c: c.size):
            report.problems.append(
                f"log truncated after event {size}: signed checkpoint {cp.size} covers events"
                " that are gone"
            )
        report.events_unsigned = max(0, size - report.signed_through)
        if self.expected is not None and self.expected[0] > size:
            report.problems.append(
                f"log truncated after event {size}: the broker integrated up to {self.expected[0]}"
            )
        if stored_root is not None and size:
            try:
                if stored_root(size) != self.builder.root():
                    report.problems.append(
                        "the stored tree does not match the events (the proofs it serves are wrong)"
                    )
            except LookupError as exc:
                report.problems.append(f"the stored tree is incomplete: {exc}")
        if policy is not None:
            witnessed(report, self.matched, self.identity, policy)
        return report


def log_event(row: Sequence[Any]) -> LogEvent:
    """A stored row (:data:`~broker.audit.leaves.COLUMNS`, ``prev``, ``hash``) as an event."""
    body = dict(zip(COLUMNS, row, strict=False))  # the first len(COLUMNS) columns
    seq = body["seq"] = int(row[0])
    detail = body["detail"]
    body["detail"] = (json.loads(detail) if detail else None) or {}
    return LogEvent(seq, body, row[-2], row[-1])


def verify_log(
    events: Iterable[LogEvent],
    notes: Iterable[bytes],
    identity: LogIdentity,
    *,
    expected: tuple[int, bytes] | None = None,
    stored_root: Callable[[int], bytes] | None = None,
    first_seq: int = 1,
    policy: WitnessPolicy | None = None,
) -> Report:
    """Check every event from ``first_seq`` = 1 on, and every checkpoint note.

    ``expected``: a (size, root) the log must reach (what the running broker last
    integrated). ``stored_root(size)``: the root the stored tree gives, which must be
    the events' (the tree serves the proofs). ``policy``: the cosignatures a checkpoint
    whose root matches must carry (the newest such one is reported as witnessed)."""
    check = _Verifier(notes, identity, expected, first_seq)
    for ev in events:
        check.event(ev)
    return check.report(stored_root, policy)


def verify_rows(
    pages: Iterable[Sequence[Sequence[Any]]],
    notes: Iterable[bytes],
    identity: LogIdentity,
    *,
    expected: tuple[int, bytes] | None = None,
    stored_root: Callable[[int], bytes] | None = None,
    policy: WitnessPolicy | None = None,
) -> Report:
    """:func:`verify_log` over the stored log, read as pages of rows (the columns
    :data:`~broker.audit.leaves.COLUMNS`, then ``prev`` and ``hash``): the same checks
    and the same report, faster for the events whose stored form is the current one."""
    check = _Verifier(notes, identity, expected, 1)
    for page in pages:
        check.rows(page)
    return check.report(stored_root, policy)
