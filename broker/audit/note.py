"""C2SP signed notes, checkpoints, Ed25519 cosignatures and tlog-proof files. Pure.

The formats, as specified at c2sp.org:

- **signed-note**: a text ending in a newline, a blank line, then one or more signature
  lines ``— <key name> <base64(4-byte key id || signature)>`` (U+2014 EM DASH, a space).
  The whole note is UTF-8 with no control character but the newline. A key name is
  non-empty, with no Unicode space and no ``+``. A key id is
  ``SHA-256(name || 0x0A || signature type || public key)[:4]``; a verifier key (vkey) is
  ``<name>+<8 lowercase hex digits of the key id>+<base64(signature type || public key)>``.
  The log signs with Ed25519 (signature type :data:`ALG_ED25519`).
- **tlog-checkpoint**: the note text ``<origin>\\n<tree size>\\n<base64 root hash>\\n``
  then optional non-empty extension lines.
- **tlog-cosignature** (Ed25519, v1, type :data:`ALG_COSIGNATURE`): the signature is an
  8-byte big-endian POSIX timestamp followed by an Ed25519 signature over
  ``cosignature/v1\\ntime <timestamp>\\n`` and the checkpoint's note text.
- **tlog-proof**: ``c2sp.org/tlog-proof@v1``, an optional ``extra <base64>`` line,
  ``index <n>``, one base64 SHA-256 hash per line of the inclusion proof, an empty line,
  then the signed checkpoint verbatim (cosignatures included).

Parsing is strict: every MUST of the specifications is checked, base64 must be the
canonical standard encoding (the one :func:`base64.b64encode` writes, padding included),
and a note is at most :data:`MAX_NOTE_BYTES` with at most :data:`MAX_SIGNATURES`
signature lines. Signatures by unknown keys (a name or a key id that no given verifier
has) are kept and ignored; a signature by a known key (name *and* key id) that does not
verify refuses the whole note.

Private keys (the log's, a witness's) are kept in files holding one unencrypted PKCS#8
Ed25519 key in PEM (``-----BEGIN PRIVATE KEY-----``), mode 0600; a key file that its
group or others may use is refused (:func:`read_private_key`). A witness's key file
starts with one more line, ``witness-name: <key name>`` (:func:`write_cosigner`).

Every failure is a :class:`NoteError` with a one-line message that never holds key
material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "ALG_COSIGNATURE",
    "ALG_ED25519",
    "MAX_NOTE_BYTES",
    "MAX_PROOF_FILE_BYTES",
    "MAX_PROOF_HASHES",
    "MAX_SIGNATURES",
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "Cosigner",
    "NoteError",
    "OpenedNote",
    "Signature",
    "Signer",
    "TlogProof",
    "Verifier",
    "add_signatures",
    "cosign",
    "cosignatures",
    "key_id",
    "new_key",
    "open_note",
    "parse_checkpoint",
    "parse_note",
    "parse_tlog_proof",
    "parse_verifier_key",
    "read_cosigner",
    "read_private_key",
    "sign_note",
    "verifier_key",
    "verify_cosignature",
    "write_cosigner",
    "write_private_key",
]

ALG_ED25519 = 0x01
"""Signature type of plain Ed25519 note signatures (c2sp.org/signed-note): the log's."""
ALG_COSIGNATURE = 0x04
"""Signature type of timestamped Ed25519 cosignatures v1 (c2sp.org/tlog-cosignature)."""
_ALGS = {ALG_ED25519: "Ed25519", ALG_COSIGNATURE: "Ed25519 cosignature v1"}

MAX_NOTE_BYTES = 1 << 20
"""The largest note accepted or produced."""
MAX_SIGNATURES = 100
"""The most signature lines a note may carry (the spec asks for at least 16)."""
MAX_PROOF_HASHES = 64
"""The longest inclusion proof a tlog-proof file may carry (a tree of 2^64 leaves)."""
MAX_PROOF_FILE_BYTES = MAX_NOTE_BYTES + 64 * 1024
"""The largest tlog-proof file accepted: a note, the proof and some extra data."""
_MAX_KEY_FILE_BYTES = 64 * 1024
_MAX_TIMESTAMP = (1 << 63) - 1
_MAX_SIZE = (1 << 63) - 1  # tree sizes and indexes as Go's tlog (int64) takes them

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_EM_DASH = "\u2014"
_SIG_PREFIX = _EM_DASH + " "
_COSIGNATURE_HEADER = "cosignature/v1\n"
_KEY_ID_SIZE = 4
_ED25519_PUBLIC = 32
_ED25519_SIGNATURE = 64
_HASH_SIZE = 32

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A note, key, checkpoint, cosignature or proof file that is malformed or does not
    verify. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


# --- encodings --------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    """Standard base64, canonical only (re-encoding gives ``text`` back)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not base64") from None
    if _b64(raw) != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _decimal(text: str, what: str, limit: int) -> int:
    """ASCII decimal with no leading zero, at most ``limit``."""
    if not _DECIMAL.fullmatch(text):
        raise NoteError(f"{what} is not a decimal number without leading zeros")
    value = int(text)
    if value > limit:
        raise NoteError(f"{what} is too large")
    return value


def _is_space(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) == "Zs"


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a key name (non-empty, no Unicode space, no '+'), or None."""
    if not name:
        return "is empty"
    if "+" in name:
        return "contains '+'"
    if any(_is_space(c) for c in name):
        return "contains a space"
    if _CONTROL.search(name):
        return "contains a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def _check_name(name: str, what: str = "key name") -> None:
    problem = _name_problem(name)
    if problem is not None:
        raise NoteError(f"{what} {problem}")


def _check_text(text: str, what: str) -> None:
    """A note's text: ends with a newline, UTF-8, no control character but newlines."""
    if not text.endswith("\n"):
        raise NoteError(f"{what} does not end with a newline")
    if _CONTROL.search(text):
        raise NoteError(f"{what} contains a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError(f"{what} is not valid UTF-8") from None


# --- keys ---------------------------------------------------------------------------------


def key_id(name: str, alg: int, public: bytes) -> bytes:
    """``SHA-256(name || 0x0A || alg || public)[:4]``: a key's id in signature lines."""
    _check_name(name)
    if not 0 <= alg <= 0xFF:
        raise NoteError("signature type is not one byte")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public).digest()
    return digest[:_KEY_ID_SIZE]


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A public key a note or cosignature is checked with: its name, signature type
    (:data:`ALG_ED25519` for a log, :data:`ALG_COSIGNATURE` for a witness), key id
    and 32-byte Ed25519 public key. Construction checks that they agree."""

    name: str
    alg: int
    key_id: bytes
    public: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.alg not in _ALGS:
            raise NoteError(f"verifier key {self.name}: unknown signature type {self.alg:#04x}")
        if len(self.public) != _ED25519_PUBLIC:
            raise NoteError(
                f"verifier key {self.name}: an Ed25519 public key is 32 bytes, "
                f"not {len(self.public)}"
            )
        if self.key_id != key_id(self.name, self.alg, self.public):
            raise NoteError(f"verifier key {self.name}: key id does not match the key")
        try:
            Ed25519PublicKey.from_public_bytes(self.public)
        except ValueError:
            raise NoteError(f"verifier key {self.name}: not an Ed25519 public key") from None

    @classmethod
    def of(cls, name: str, alg: int, public: bytes) -> Verifier:
        """The verifier for ``public`` under ``name`` and ``alg`` (its key id computed)."""
        return cls(name, alg, key_id(name, alg, public), public)

    @property
    def label(self) -> str:
        """``name+<hex key id>``: how messages name the key."""
        return f"{self.name}+{self.key_id.hex()}"

    def vkey(self) -> str:
        """The verifier key: ``name+<hex key id>+<base64(alg || public key)>``."""
        return f"{self.label}+{_b64(bytes([self.alg]) + self.public)}"

    def __str__(self) -> str:
        return self.vkey()

    def matches(self, signature: Signature) -> bool:
        """Whether ``signature`` is by this key (same name and key id)."""
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, message: bytes, raw: bytes) -> bool:
        """Whether ``raw`` is this key's Ed25519 signature of ``message``."""
        if len(raw) != _ED25519_SIGNATURE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(raw, message)
        except InvalidSignature:
            return False
        return True


def verifier_key(name: str, alg: int, public: bytes) -> str:
    """The vkey of ``public`` under ``name`` and signature type ``alg``."""
    return Verifier.of(name, alg, public).vkey()


def parse_verifier_key(text: str) -> Verifier:
    """A vkey ``name+<8 hex>+<base64(alg || key)>``; strict (lowercase hex, canonical
    base64, the key id recomputed, a known signature type, a 32-byte key)."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteError("verifier key is not name+keyid+key")
    name, hex_id, encoded = parts
    _check_name(name, "verifier key name")
    if not _KEY_ID_HEX.fullmatch(hex_id):
        raise NoteError(f"verifier key {name}: key id is not 8 lowercase hex digits")
    raw = _unb64(encoded, f"verifier key {name}: key")
    if not raw:
        raise NoteError(f"verifier key {name}: key is empty")
    alg, public = raw[0], raw[1:]
    if bytes.fromhex(hex_id) != key_id(name, alg, public):
        raise NoteError(f"verifier key {name}: key id does not match the key")
    return Verifier(name, alg, bytes.fromhex(hex_id), public)


@dataclass
class Signer:
    """The log's Ed25519 key (signature type :data:`ALG_ED25519`) under its name."""

    name: str
    key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "signer name")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, ALG_ED25519, _raw_public(self.key))

    def verifier(self) -> Verifier:
        return Verifier.of(self.name, ALG_ED25519, _raw_public(self.key))

    def vkey(self) -> str:
        return self.verifier().vkey()

    def sign(self, text: str) -> Signature:
        """This key's signature of a note text."""
        _check_text(text, "note text")
        return Signature(self.name, self.key_id, self.key.sign(text.encode("utf-8")))


@dataclass
class Cosigner:
    """A witness's Ed25519 key under its name, for cosignatures v1
    (signature type :data:`ALG_COSIGNATURE`)."""

    name: str
    key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "cosigner name")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, ALG_COSIGNATURE, _raw_public(self.key))

    def verifier(self) -> Verifier:
        return Verifier.of(self.name, ALG_COSIGNATURE, _raw_public(self.key))

    def vkey(self) -> str:
        return self.verifier().vkey()


# --- notes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name and id, and the signature bytes that follow
    the id (``raw``)."""

    name: str
    key_id: bytes
    raw: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.key_id) != _KEY_ID_SIZE:
            raise NoteError(f"signature by {self.name}: a key id is 4 bytes")
        if not self.raw:
            raise NoteError(f"signature by {self.name} is empty")

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"

    def line(self) -> str:
        """``— <name> <base64(key id || signature)>`` and its newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_id + self.raw)}\n"


def _parse_signature_line(line: str, where: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError(f"{where} does not start with an em dash and a space")
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space:
        raise NoteError(f"{where} has no signature after the key name")
    problem = _name_problem(name)
    if problem is not None:
        raise NoteError(f"{where}: key name {problem}")
    raw = _unb64(encoded, f"{where}: signature")
    if len(raw) <= _KEY_ID_SIZE:
        raise NoteError(f"{where}: signature is too short")
    return Signature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def parse_note(data: bytes) -> tuple[str, list[Signature]]:
    """A signed note's text (with its final newline) and every signature line, in order.

    Checks the format only, no signature: at most :data:`MAX_NOTE_BYTES`, UTF-8 with no
    control character but newlines, the text ending in a newline, then a blank line,
    then 1 to :data:`MAX_SIGNATURES` well-formed signature lines each ending in a
    newline. The text is separated from the signatures by the last blank line.
    """
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"note is larger than {MAX_NOTE_BYTES} bytes")
    try:
        whole = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not valid UTF-8") from None
    if _CONTROL.search(whole):
        raise NoteError("note contains a control character other than newline")
    split = whole.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = whole[: split + 1], whole[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("note's last signature line does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signature lines")
    signatures = [
        _parse_signature_line(line, f"signature line {number}")
        for number, line in enumerate(lines, 1)
    ]
    return text, signatures


def _format_note(text: str, signatures: Sequence[Signature]) -> bytes:
    if not signatures:
        raise NoteError("a note needs at least one signature")
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"a note carries at most {MAX_SIGNATURES} signature lines")
    note = (text + "\n" + "".join(s.line() for s in signatures)).encode("utf-8")
    if len(note) > MAX_NOTE_BYTES:
        raise NoteError(f"note would be larger than {MAX_NOTE_BYTES} bytes")
    return note


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """The signed note: ``text`` (ending in a newline), a blank line, one signature
    line per signer in the order given."""
    _check_text(text, "note text")
    labels = [(s.name, s.key_id) for s in signers]
    if len(set(labels)) != len(labels):
        raise NoteError("the same signer is given twice")
    return _format_note(text, [s.sign(text) for s in signers])


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signature by at least one known log key verified.

    ``signatures`` holds every signature line, in order (unknown keys' included);
    ``verified`` the given verifiers whose signature verified, in the order signed.
    """

    text: str
    signatures: tuple[Signature, ...]
    verified: tuple[Verifier, ...]

    def checkpoint(self) -> Checkpoint:
        """The text as a checkpoint (NoteError if it is not one)."""
        return parse_checkpoint(self.text)


def _known(verifiers: Sequence[Verifier], alg: int, role: str) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        if verifier.alg != alg:
            raise NoteError(
                f"{verifier.label} has signature type {verifier.alg:#04x}, "
                f"not {alg:#04x} as a {role} key"
            )
        seen = known.setdefault((verifier.name, verifier.key_id), verifier)
        if seen != verifier:
            raise NoteError(f"two different {role} keys are both {verifier.label}")
    return known


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> OpenedNote:
    """Parse ``data`` and check it is signed by at least one of ``verifiers`` (log keys,
    :data:`ALG_ED25519`).

    Every signature line by a known key (same name and key id) must verify, else the
    note is refused, naming the key; lines by other keys are kept and not checked.
    """
    known = _known(verifiers, ALG_ED25519, "log")
    text, signatures = parse_note(data)
    message = text.encode("utf-8")
    verified: list[Verifier] = []
    for signature in signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, signature.raw):
            raise NoteError(f"invalid signature by known key {verifier.label}")
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        raise NoteError(
            f"note has no signature by a known key ({len(known)} given, "
            f"{len(signatures)} signature lines)"
        )
    return OpenedNote(text, tuple(signatures), tuple(verified))


def add_signatures(note: bytes, lines: Sequence[str]) -> bytes:
    """``note`` with the signature ``lines`` appended (each one line, its trailing
    newline optional). Identical lines appear once; the note's own lines keep their
    places, the log's first. Signatures are not checked here."""
    text, signatures = parse_note(note)
    for number, line in enumerate(lines, 1):
        body = line.removesuffix("\n")
        if "\n" in body:
            raise NoteError(f"added signature {number} is more than one line")
        if _CONTROL.search(body):
            raise NoteError(f"added signature {number} contains a control character")
        signatures.append(_parse_signature_line(body, f"added signature {number}"))
    unique: dict[str, Signature] = {}
    for signature in signatures:
        unique.setdefault(signature.line(), signature)
    return _format_note(text, list(unique.values()))


# --- checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head as a checkpoint note's text (c2sp.org/tlog-checkpoint)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what, line in [("origin", self.origin)] + [
            ("extension line", e) for e in self.extensions
        ]:
            if not line:
                raise NoteError(f"checkpoint {what} is empty")
            if "\n" in line or _CONTROL.search(line):
                raise NoteError(f"checkpoint {what} contains a newline or control character")
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                raise NoteError(f"checkpoint {what} is not valid UTF-8") from None
        if isinstance(self.size, bool) or not 0 <= self.size <= _MAX_SIZE:
            raise NoteError("checkpoint tree size is out of range")
        if len(self.root) != _HASH_SIZE:
            raise NoteError(f"checkpoint root hash is {len(self.root)} bytes, not 32")

    def body(self) -> str:
        """The note text: origin, size, base64 root hash, extension lines, each ending
        in a newline."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint note's text, strictly: at least three lines, each ending in a newline
    and non-empty; a decimal size without leading zeros; a 32-byte root hash."""
    _check_text(text, "checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint has fewer than three lines")
    origin, size, root, *extensions = lines
    if not origin:
        raise NoteError("checkpoint origin is empty")
    if any(not line for line in extensions):
        raise NoteError("checkpoint has an empty extension line")
    raw_root = _unb64(root, "checkpoint root hash")
    if len(raw_root) != _HASH_SIZE:
        raise NoteError(f"checkpoint root hash is {len(raw_root)} bytes, not 32")
    tree_size = _decimal(size, "checkpoint tree size", _MAX_SIZE)
    return Checkpoint(origin, tree_size, raw_root, tuple(extensions))


# --- cosignatures -------------------------------------------------------------------------


def _cosigned_message(timestamp: int, checkpoint_body: str) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_body}".encode()


def cosign(checkpoint_body: str, cosigner: Cosigner, timestamp: int) -> str:
    """``cosigner``'s cosignature v1 of a checkpoint's note text at ``timestamp`` (POSIX
    seconds): one signature line, with its newline, to append to the checkpoint note."""
    parse_checkpoint(checkpoint_body)
    if isinstance(timestamp, bool) or not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise NoteError("cosignature timestamp is out of range")
    raw = cosigner.key.sign(_cosigned_message(timestamp, checkpoint_body))
    signed = Signature(cosigner.name, cosigner.key_id, timestamp.to_bytes(8, "big") + raw)
    return signed.line()


def verify_cosignature(signature: Signature, checkpoint_body: str, verifier: Verifier) -> int:
    """The timestamp of ``signature``, a cosignature v1 of ``checkpoint_body`` by
    ``verifier`` (a :data:`ALG_COSIGNATURE` key). NoteError unless it verifies."""
    if verifier.alg != ALG_COSIGNATURE:
        raise NoteError(f"{verifier.label} is not a cosigner key (signature type 0x04)")
    if signature.name != verifier.name:
        raise NoteError(f"signature by {signature.name} is not by cosigner {verifier.name}")
    if signature.key_id != verifier.key_id:
        raise NoteError(f"signature by {signature.label} is not by cosigner {verifier.label}")
    parse_checkpoint(checkpoint_body)
    if len(signature.raw) != 8 + _ED25519_SIGNATURE:
        raise NoteError(f"cosignature by {verifier.label} is not 72 bytes")
    timestamp = int.from_bytes(signature.raw[:8], "big")
    if timestamp > _MAX_TIMESTAMP:
        raise NoteError(f"cosignature by {verifier.label} has a timestamp of 2^63 or more")
    if not verifier.verify(_cosigned_message(timestamp, checkpoint_body), signature.raw[8:]):
        raise NoteError(f"invalid cosignature by {verifier.label}")
    return timestamp


def cosignatures(opened: OpenedNote, witnesses: Sequence[Verifier]) -> dict[str, int]:
    """For each witness (a :data:`ALG_COSIGNATURE` key) with a valid cosignature on the
    opened checkpoint: its vkey → the cosignature's timestamp (the latest, if it
    cosigned more than once). Witnesses whose lines are absent or do not verify are
    left out: a policy counts what is there."""
    known = _known(witnesses, ALG_COSIGNATURE, "cosigner")
    opened.checkpoint()
    found: dict[str, int] = {}
    for signature in opened.signatures:
        witness = known.get((signature.name, signature.key_id))
        if witness is None:
            continue
        try:
            timestamp = verify_cosignature(signature, opened.text, witness)
        except NoteError:
            continue
        vkey = witness.vkey()
        found[vkey] = max(timestamp, found.get(vkey, timestamp))
    return found


# --- tlog-proof ---------------------------------------------------------------------------


@dataclass
class TlogProof:
    """A c2sp.org/tlog-proof file: the entry's index, its inclusion proof (hashes from
    the leaf's sibling up), the signed checkpoint note (cosignatures included) and
    optional unauthenticated extra data."""

    index: int
    proof: list[bytes]
    checkpoint: bytes
    extra: bytes | None = None

    def check(self) -> Checkpoint:
        """The checkpoint, after checking the proof's form (not its signatures)."""
        if isinstance(self.index, bool) or not 0 <= self.index <= _MAX_SIZE:
            raise NoteError("tlog-proof index is out of range")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise NoteError(f"tlog-proof has more than {MAX_PROOF_HASHES} proof hashes")
        if any(len(h) != _HASH_SIZE for h in self.proof):
            raise NoteError("tlog-proof hash is not 32 bytes")
        if self.extra is not None and not self.extra:
            raise NoteError("tlog-proof extra data is empty (leave it out instead)")
        text, _ = parse_note(self.checkpoint)
        checkpoint = parse_checkpoint(text)
        if self.index >= checkpoint.size:
            raise NoteError("tlog-proof index is not below the checkpoint's tree size")
        return checkpoint

    def format(self) -> bytes:
        self.check()
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {_b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(_b64(h) for h in self.proof)
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.checkpoint


def parse_tlog_proof(data: bytes) -> TlogProof:
    """A tlog-proof file, strictly (the checkpoint must be a well-formed checkpoint note;
    its signatures are not checked here: open it with :func:`open_note`)."""
    if len(data) > MAX_PROOF_FILE_BYTES:
        raise NoteError(f"tlog-proof is larger than {MAX_PROOF_FILE_BYTES} bytes")
    end = data.find(b"\n\n")
    if end < 0:
        raise NoteError("tlog-proof has no empty line before the checkpoint")
    try:
        header = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise NoteError("tlog-proof header is not ASCII") from None
    lines = header.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise NoteError(f"tlog-proof does not start with {TLOG_PROOF_HEADER}")
    rest = lines[1:]
    extra: bytes | None = None
    if rest and rest[0].startswith("extra "):
        extra = _unb64(rest[0].removeprefix("extra "), "tlog-proof extra data")
        if not extra:
            raise NoteError("tlog-proof extra data is empty")
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise NoteError("tlog-proof has no index line")
    index = _decimal(rest[0].removeprefix("index "), "tlog-proof index", _MAX_SIZE)
    hashes = rest[1:]
    if len(hashes) > MAX_PROOF_HASHES:
        raise NoteError(f"tlog-proof has more than {MAX_PROOF_HASHES} proof hashes")
    proof = [_unb64(h, f"tlog-proof hash {n}") for n, h in enumerate(hashes, 1)]
    parsed = TlogProof(index, proof, bytes(data[end + 2 :]), extra)
    parsed.check()
    return parsed


# --- key files ----------------------------------------------------------------------------


def new_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key (the log's or a witness's)."""
    return Ed25519PrivateKey.generate()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_secret(path: str | os.PathLike[str], data: bytes) -> None:
    """``data`` into a new file ``path``, mode 0600, synced. Refuses to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise NoteError(f"{os.fspath(path)!s} exists; refusing to overwrite a key") from None
    except OSError as e:
        raise NoteError(f"{os.fspath(path)!s}: cannot create: {e.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _read_secret(path: str | os.PathLike[str]) -> bytes:
    """A key file's bytes: a regular file that its group and others may not use."""
    where = str(os.fspath(path))
    try:
        with open(path, "rb") as held:
            info = os.fstat(held.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise NoteError(f"{where} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise NoteError(
                    f"{where} is open to its group or others (mode {mode:04o}); "
                    "a private key file must be mode 0600"
                )
            data = held.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise NoteError(f"{where}: cannot read: {e.strerror}") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise NoteError(f"{where} is too large for a key file")
    return data


def _load_key(pem: bytes, where: str) -> Ed25519PrivateKey:
    if not pem.startswith(b"-----BEGIN PRIVATE KEY-----"):
        raise NoteError(f"{where} does not hold an unencrypted PKCS#8 PEM private key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise NoteError(f"{where} does not hold an unencrypted PKCS#8 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"{where} does not hold an Ed25519 key")
    return key


def write_private_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Write ``key`` to a new file ``path``, mode 0600, as unencrypted PKCS#8 PEM.
    Refuses to overwrite an existing file."""
    _write_secret(path, _pem(key))


def read_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 key in the PKCS#8 PEM file ``path``. Refuses a file that is not a
    regular file or whose mode gives its group or others any access (chmod 600 it)."""
    return _load_key(_read_secret(path), str(os.fspath(path)))


_COSIGNER_NAME = b"witness-name: "


def write_cosigner(path: str | os.PathLike[str], cosigner: Cosigner) -> None:
    """A witness's key file: the line ``witness-name: <name>``, then its key as
    :func:`write_private_key` writes it (unencrypted PKCS#8 PEM); a new file, mode 0600."""
    _write_secret(path, _COSIGNER_NAME + cosigner.name.encode() + b"\n" + _pem(cosigner.key))


def read_cosigner(path: str | os.PathLike[str]) -> Cosigner:
    """The witness in a key file :func:`write_cosigner` wrote (the same checks as
    :func:`read_private_key`, and a valid key name)."""
    where = str(os.fspath(path))
    data = _read_secret(path)
    first, newline, pem = data.partition(b"\n")
    if not first.startswith(_COSIGNER_NAME) or not newline:
        raise NoteError(f"{where} is not a witness key file (no 'witness-name:' line first)")
    try:
        name = first[len(_COSIGNER_NAME) :].decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError(f"{where}: the witness name is not valid UTF-8") from None
    _check_name(name, f"{where}: the witness name")
    return Cosigner(name, _load_key(pem, where))
