"""Witnesses, on the log's side: their keys, what a posted cosignature must be, and the
policy an auditor verifies with (K cosignatures by witnesses the auditor names). Pure.

A witness (c2sp.org/tlog-cosignature, Ed25519 v1) is someone other than the operator who
fetches the log's newest checkpoint, checks that it extends the one it cosigned before
(a consistency proof), and cosigns it: "as of time T, this is the largest tree of this
log I have seen, and it is consistent with everything I saw before". The broker keeps
the cosignatures of the witnesses the operator registered and serves them appended to
the checkpoint (broker/audit/cosignatures.py, with these checks); an auditor who
requires K of them knows that the history the log showed them is the one those
witnesses saw, not one made up for them alone.

A witness posts a *cosigned checkpoint*: the checkpoint's note text, a blank line and
its cosignature line (a signed note whose signature is the cosignature). It may keep the
log's own signature lines, and other registered witnesses' cosignatures, in it (the
checkpoint as served, with its line added): the log's lines are ignored (the stored note
is what counts), every other line must be a valid cosignature by a registered witness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker.audit.note import (
    ALG_COSIGNATURE,
    Checkpoint,
    NoteError,
    Signature,
    Verifier,
    cosignatures,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_verifier_key,
    verify_cosignature,
)

__all__ = [
    "FUTURE_SECONDS",
    "MAX_COSIGNED_BYTES",
    "MAX_WITNESSES",
    "Cosignature",
    "Posted",
    "WitnessPolicy",
    "check_cosignatures",
    "parse_posted",
    "witness_key",
]

MAX_WITNESSES = 50
"""The most witnesses a log registers (a served note carries at most 100 signatures)."""
MAX_COSIGNED_BYTES = 16 * 1024
"""The largest cosigned checkpoint a witness may post (413 beyond)."""
FUTURE_SECONDS = 300
"""A cosignature dated more than this ahead of the broker's clock is refused."""


def witness_key(vkey: str) -> Verifier:
    """A witness's verifier key (``name+id+base64(0x04 || key)``), strictly."""
    verifier = parse_verifier_key(vkey.strip())
    if verifier.alg != ALG_COSIGNATURE:
        raise NoteError(
            f"{verifier.label} is not a witness key: its signature type is"
            f" {verifier.alg:#04x}, a witness's (an Ed25519 cosigner's) is 0x04"
        )
    return verifier


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: by whom, its timestamp and its signature line."""

    witness: Verifier
    timestamp: int
    line: str


@dataclass(frozen=True)
class Posted:
    """A cosigned checkpoint as a witness posted it, parsed (not checked)."""

    text: str
    checkpoint: Checkpoint
    signatures: tuple[Signature, ...]


def parse_posted(body: bytes) -> Posted:
    """A posted cosigned checkpoint: a signed note whose text is a checkpoint."""
    if len(body) > MAX_COSIGNED_BYTES:
        raise NoteError(f"a cosigned checkpoint is at most {MAX_COSIGNED_BYTES} bytes")
    text, signatures = parse_note(body)
    return Posted(text, parse_checkpoint(text), tuple(signatures))


def check_cosignatures(
    posted: Posted,
    signed_text: str,
    log: Sequence[Verifier],
    witnesses: Sequence[Verifier],
    now: int,
) -> list[Cosignature]:
    """The posted cosignatures, each checked: ``signed_text`` is the text of the note
    the log signed at the posted size (it must be the posted text), ``log`` the log's
    keys (their lines are skipped), ``witnesses`` the registered ones. NoteError, naming
    the first line that is not a valid cosignature by a registered witness."""
    if posted.text != signed_text:
        raise NoteError(
            f"this log signed another checkpoint of size {posted.checkpoint.size}"
            " (another root or text)"
        )
    by_label = {(w.name, w.key_id): w for w in witnesses}
    found: dict[str, Cosignature] = {}
    for number, signature in enumerate(posted.signatures, 1):
        if any(key.matches(signature) for key in log):
            continue
        witness = by_label.get((signature.name, signature.key_id))
        if witness is None:
            raise NoteError(
                f"signature line {number} ({signature.label[:120]}) is not by a registered witness"
            )
        timestamp = verify_cosignature(signature, posted.text, witness)
        if timestamp > now + FUTURE_SECONDS:
            raise NoteError(
                f"the cosignature by {witness.label} is dated {timestamp - now} s ahead of"
                " this broker's clock"
            )
        seen = found.get(witness.vkey())
        if seen is None or timestamp > seen.timestamp:
            found[witness.vkey()] = Cosignature(witness, timestamp, signature.line())
    if not found:
        raise NoteError("no cosignature by a registered witness")
    return list(found.values())


@dataclass(frozen=True)
class WitnessPolicy:
    """What an auditor requires: ``required`` valid cosignatures, by distinct
    ``witnesses`` among those given, on a checkpoint."""

    witnesses: tuple[Verifier, ...]
    required: int

    @classmethod
    def of(cls, vkeys: Iterable[str], required: int) -> WitnessPolicy:
        witnesses: dict[str, Verifier] = {}
        for vkey in vkeys:
            if vkey.strip():
                verifier = witness_key(vkey)
                witnesses.setdefault(verifier.vkey(), verifier)
        if not witnesses:
            raise NoteError("no witness key given")
        if not 1 <= required <= len(witnesses):
            raise NoteError(
                f"--min-witnesses must be between 1 and the {len(witnesses)} witness key(s) given"
            )
        labels: dict[tuple[str, bytes], Verifier] = {}
        for verifier in witnesses.values():
            if labels.setdefault((verifier.name, verifier.key_id), verifier) != verifier:
                raise NoteError(f"two different witness keys are both {verifier.label}")
        return cls(tuple(witnesses.values()), required)

    def count(self, note: bytes, log: Sequence[Verifier]) -> int:
        """How many of the witnesses validly cosigned ``note`` (0 unless the log's
        signature on it verifies with ``log``)."""
        try:
            opened = open_note(note, log)
        except NoteError:
            return 0
        return len(cosignatures(opened, self.witnesses))
