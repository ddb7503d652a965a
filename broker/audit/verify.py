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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from broker.audit.chain import Report
from broker.audit.checkpoints import LogIdentity, SignedCheckpoint
from broker.audit.leaves import leaf_data
from broker.audit.merkle import RootBuilder, leaf_hash
from broker.audit.note import NoteError
from broker.audit.witnesses import WitnessPolicy

__all__ = ["LogEvent", "check_notes", "verify_log", "witnessed"]


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
    report = Report()
    matched: list[SignedCheckpoint] = []
    checkpoints = check_notes(notes, identity, report)
    at_size: dict[int, list[SignedCheckpoint]] = {}
    for cp in checkpoints:
        at_size.setdefault(cp.size, []).append(cp)
    builder = RootBuilder()
    previous: LogEvent | None = None
    chain_hash: str | None = None
    first_bad: int | None = None
    index = -1

    def bad(problem: str) -> None:
        nonlocal first_bad
        report.problems.append(problem)
        if first_bad is None:
            first_bad = index

    def settle(size: int) -> None:
        if expected is not None and expected[0] == size and builder.root() != expected[1]:
            bad(f"the log up to event {size} is not the log this broker integrated")
        for cp in at_size.pop(size, ()):
            if builder.root() != cp.root:
                bad(f"checkpoint {size}: root does not match; events up to {size} were changed")
            else:
                report.checkpoints_valid += 1
                report.signed_through = max(report.signed_through, size)
                report.proved.append(f"checkpoint {size}: events 1-{size} are the ones it signed")
                matched.append(cp)

    settle(0)
    for index, ev in enumerate(events):
        expected_seq = first_seq + index if previous is None else previous.seq + 1
        if previous is not None and ev.seq <= previous.seq:
            bad(f"events reordered: {ev.seq} comes after {previous.seq}")
        elif ev.seq != expected_seq:
            low = expected_seq - 1
            missing = ev.seq - 1 if ev.seq == low + 2 else f"{low + 1}-{ev.seq - 1}"
            bad(f"event {missing} missing (between {low} and {ev.seq})")
        if ev.body.get("seq") != ev.seq:
            bad(f"event {ev.seq} changed (its content does not match its place)")
        try:
            data = leaf_data(ev.body, ev.prev)
        except ValueError as exc:
            # Not an event any broker wrote (bytes where text belongs, a float): named,
            # and something else stands in its place, so the roots after it fail too.
            bad(f"event {ev.seq} changed (its content cannot be read as an event: {exc})")
            data = repr(ev.body).encode()
        leaf = leaf_hash(data)
        if ev.prev is not None:
            # An event of the old hash chain: its links and its hash, as before.
            if hashlib.sha256(data).hexdigest() != ev.hash:
                bad(f"event {ev.seq} changed (its content does not match its hash)")
            elif chain_hash is not None and ev.prev != chain_hash:
                bad(f"event {ev.seq}: link to event {ev.seq - 1} broken")
            chain_hash = ev.hash
        elif ev.hash is not None and ev.hash != leaf.hex():
            bad(f"event {ev.seq} changed (its content does not match its hash)")
        builder.add(leaf)
        settle(builder.size)
        previous = ev
    report.events_total = index + 1
    report.events_valid = first_bad if first_bad is not None else report.events_total
    size = builder.size
    for cp in sorted((c for cs in at_size.values() for c in cs), key=lambda c: c.size):
        report.problems.append(
            f"log truncated after event {size}: signed checkpoint {cp.size} covers events"
            " that are gone"
        )
    report.events_unsigned = max(0, size - report.signed_through)
    if expected is not None and expected[0] > size:
        report.problems.append(
            f"log truncated after event {size}: the broker integrated up to {expected[0]}"
        )
    if stored_root is not None and size:
        try:
            if stored_root(size) != builder.root():
                report.problems.append(
                    "the stored tree does not match the events (the proofs it serves are wrong)"
                )
        except LookupError as exc:
            report.problems.append(f"the stored tree is incomplete: {exc}")
    if policy is not None:
        witnessed(report, matched, identity, policy)
    return report
