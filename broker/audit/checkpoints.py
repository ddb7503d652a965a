"""The log's identity and its signed checkpoints (C2SP tlog-checkpoint as a signed note).

A checkpoint is the note

    <origin>
    <tree size>
    <base64 root hash>

    — <origin> <base64(key id || Ed25519 signature)>

signed with the broker's audit key under the key name ``origin``
(``BROKER_AUDIT_ORIGIN``, by default the host and path of ``BROKER_PUBLIC_URL``
followed by ``/audit``). Its verifier key (``origin+<key id>+<base64 key>``, C2SP
signed-note) is what an auditor, a witness and the Go checksum database's ``note``
package check it with. A rotated audit key keeps verifying the checkpoints it signed:
every retired key is a verifier too, under the same name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.note import (
    ALG_ED25519,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)

__all__ = ["LogIdentity", "SignedCheckpoint"]


def _raw(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and its note as signed (and, later, cosigned)."""

    checkpoint: Checkpoint
    note: bytes

    @classmethod
    def unverified(cls, note: bytes) -> SignedCheckpoint:
        """A note read back as stored, its signature not checked (no key at hand)."""
        text, _ = parse_note(note)
        return cls(parse_checkpoint(text), note)

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


class LogIdentity:
    """The origin, the verifier keys, and (for the broker) the signing key."""

    def __init__(
        self,
        origin: str,
        public: Mapping[str, ed25519.Ed25519PublicKey],
        key: ed25519.Ed25519PrivateKey | None = None,
    ) -> None:
        self.origin = origin
        self._signer = Signer(origin, key) if key is not None else None
        current = _raw(key.public_key()) if key is not None else None
        raws = [_raw(k) for k in public.values()]
        if current is not None:
            raws = [current, *(r for r in raws if r != current)]
        self.verifiers: list[Verifier] = [
            parse_verifier_key(verifier_key(origin, ALG_ED25519, raw)) for raw in raws
        ]
        """The current key's first (when this side can sign), then the retired ones."""

    @classmethod
    def from_vkeys(cls, vkeys: list[str]) -> LogIdentity:
        """An auditor's view: only verifier keys (one log, so one origin)."""
        verifiers = [parse_verifier_key(v.strip()) for v in vkeys if v.strip()]
        if not verifiers:
            raise NoteError("no verifier key given")
        names = {v.name for v in verifiers}
        if len(names) != 1:
            raise NoteError(f"verifier keys for more than one log: {', '.join(sorted(names))}")
        identity = cls.__new__(cls)
        identity.origin = verifiers[0].name
        identity._signer = None
        identity.verifiers = verifiers
        return identity

    def vkeys(self) -> list[str]:
        return [v.vkey() for v in self.verifiers]

    def sign(self, size: int, root: bytes) -> SignedCheckpoint:
        if self._signer is None:
            raise NoteError("this side holds no audit signing key")
        checkpoint = Checkpoint(self.origin, size, root)
        return SignedCheckpoint(checkpoint, sign_note(checkpoint.body(), [self._signer]))

    def open(self, note: bytes) -> SignedCheckpoint:
        """A checkpoint note, checked: signed by this log's key, for this origin."""
        opened = open_note(note, self.verifiers)
        checkpoint = parse_checkpoint(opened.text)
        if checkpoint.origin != self.origin:
            raise NoteError(f"a checkpoint of another log ({checkpoint.origin[:100]})")
        return SignedCheckpoint(checkpoint, note)
