"""Simple-signing signatures (containers-signature(5)): an OpenPGP signed message whose
literal data is a JSON payload naming a manifest digest and a docker reference.

The blob's first byte says what it is, as containers/image reads it; the payload is
parsed as strictly as containers/image parses it (unknown or duplicate keys in
``critical`` refuse the signature). The cryptography is Debian's ``gpgv``, run against a
keyring of the policy's keys alone, in an empty home directory: never a user's keyring,
never a trust database. ``gpgv`` checks the signature, not the key's expiry or revocation
(containers/image, through gpgme, checks both): a policy names the keys it trusts now.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tailor.errors import TailorError
from tailor.trust import strictjson

__all__ = [
    "Payload",
    "SignatureFormatError",
    "SignatureRejected",
    "parse_payload",
    "simple_signing_blob",
    "verify",
]

SIGNATURE_TYPE = "atomic container signature"
COSIGN_TYPE = "cosign container image signature"
_SIMPLE_SIGNING_FIRST_BYTES = frozenset(
    {
        *(0xA0, 0xA1, 0xA2, 0xA3, 0xC8),  # compressed data
        *(0x90, 0x91, 0x92, 0x3D, 0xC4),  # one-pass signature (0x3D as containers/image has it)
        *(0x88, 0x89, 0x8A, 0x8B, 0xC2),  # a signature packet
    }
)
_GPGV_TIMEOUT = 30.0
_MAX_PAYLOAD = 4 << 20


class SignatureFormatError(TailorError):
    """A blob in the signature storage is not a signature: the list cannot be trusted."""


class SignatureRejected(TailorError):
    """One signature does not support the image: why, in containers/image's words."""


def simple_signing_blob(blob: bytes) -> bytes | None:
    """The OpenPGP message in a stored signature blob; None for another kind of signature
    (containers/image's internal format names it); SignatureFormatError for junk."""
    if not blob:
        raise SignatureFormatError("empty signature blob")
    if blob[0] == 0:
        name, sep, rest = blob[1:].partition(b"\n")
        if not sep:
            raise SignatureFormatError("invalid signature format, missing newline")
        if name == b"simple-signing":
            return rest
        if name == b"sigstore-json":
            return None
        shown = name.decode(errors="replace")
        raise SignatureFormatError(f"unrecognized signature format {shown!r}")
    if blob[0] in _SIMPLE_SIGNING_FIRST_BYTES:
        return blob
    raise SignatureFormatError(f"unrecognized signature format, starting with binary 0x{blob[0]:x}")


@dataclass(frozen=True)
class Payload:
    """What a signature says: this manifest digest is this docker reference."""

    digest: str
    reference: str
    """``critical.identity.docker-reference`` as written (not normalized)."""
    creator: str | None = None
    timestamp: int | None = None


def _exactly(obj: object, keys: set[str]) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise SignatureRejected(f"JSON object expected, got {json.dumps(obj)}")
    for key in obj:
        if key not in keys:
            raise SignatureRejected(f'Unknown key "{key}"')
    for key in sorted(keys):
        if key not in obj:
            raise SignatureRejected(f'Key "{key}" missing in a JSON object')
    return obj


def _string(obj: dict[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise SignatureRejected(f'Field "{key}" is not a string')
    return value


def parse_payload(data: bytes, kind: str = SIGNATURE_TYPE) -> Payload:
    """The signed JSON, checked as containers/image checks it. A cosign payload (``kind``
    ``cosign container image signature``) may have a null ``optional``."""
    top = _exactly(strictjson.loads(data, SignatureRejected), {"critical", "optional"})
    critical = _exactly(top["critical"], {"type", "image", "identity"})
    given = _string(critical, "type")
    if given != kind:
        raise SignatureRejected(f"Unrecognized signature type {given}")
    image = _exactly(critical["image"], {"docker-manifest-digest"})
    identity = _exactly(critical["identity"], {"docker-reference"})
    optional = top["optional"]
    if optional is None and kind == COSIGN_TYPE:
        optional = {}
    if not isinstance(optional, dict):
        raise SignatureRejected(f"JSON object expected, got {json.dumps(optional)}")
    creator = optional.get("creator")
    if creator is not None and not isinstance(creator, str):
        raise SignatureRejected("Field optional.creator is not a string")
    timestamp = optional.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or int(timestamp) != timestamp
    ):
        raise SignatureRejected("Field optional.timestamp is not an integer")
    return Payload(
        _string(image, "docker-manifest-digest"),
        _string(identity, "docker-reference"),
        creator,
        None if timestamp is None else int(timestamp),
    )


def _status(lines: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in lines.splitlines():
        if line.startswith("[GNUPG:] "):
            word, *args = line[len("[GNUPG:] ") :].split(" ")
            out.append((word, args))
    return out


def _run_gpgv(argv: list[str]) -> tuple[int, str, bytes, bool]:
    """``(exit status, status lines, signed data, data cut)``: gpgv's signed data read
    from a pipe, at most _MAX_PAYLOAD + 1 bytes (a small compressed message may expand
    to any size: gpgv is stopped there, nothing is written to disk); killed after
    _GPGV_TIMEOUT seconds."""
    status_read, status_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [*argv[:1], "--status-fd", str(status_write), "--output", "-", *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(status_write,),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
        )
    except FileNotFoundError:
        os.close(status_read)
        raise TailorError("gpgv is not installed (Debian: apt-get install gpgv)") from None
    finally:
        os.close(status_write)
    timer = threading.Timer(_GPGV_TIMEOUT, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        data = proc.stdout.read(_MAX_PAYLOAD + 1)
        cut = len(data) > _MAX_PAYLOAD
        if cut:
            proc.kill()
        with os.fdopen(status_read, "rb") as status:
            lines = status.read(1 << 20).decode(errors="replace")
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if code < 0 and not cut:
        raise SignatureRejected(f"gpgv took more than {_GPGV_TIMEOUT:.0f} s")
    return code, lines, data, cut


def verify(message: bytes, keyring: bytes) -> tuple[str, bytes]:
    """``(signer fingerprint, signed data)`` of an OpenPGP signed message that carries
    exactly one good signature by a key of ``keyring`` (binary OpenPGP); otherwise
    SignatureRejected. The fingerprint is the signing key's: a subkey's own, when a
    subkey signed. gpgv refuses a signature by a key that has expired or was revoked
    (EXPKEYSIG, REVKEYSIG), as gpgme does for containers/image."""
    with tempfile.TemporaryDirectory(prefix="tailor-gpgv-") as tmp:
        home = Path(tmp)
        os.chmod(home, 0o700)
        (home / "keyring.gpg").write_bytes(keyring)
        # No ".sig" suffix: gpgv would look for a data file of the stem's name.
        (home / "message").write_bytes(message)
        argv = ["gpgv", "--homedir", str(home), "--keyring", str(home / "keyring.gpg")]
        code, lines, data, cut = _run_gpgv([*argv, str(home / "message")])
    if cut:
        raise SignatureRejected("the signed payload is larger than 4 MiB")
    status = _status(lines)
    words = [word for word, _ in status]
    if words.count("NEWSIG") != 1:
        raise SignatureRejected(f"Unexpected GPG signature count {words.count('NEWSIG')}")
    valid = [args for word, args in status if word == "VALIDSIG"]
    if "NO_PUBKEY" in words:
        raise SignatureRejected("Invalid GPG signature: no public key of the policy made it")
    bad = [w for w in words if w in {"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"}]
    if code != 0 or bad or "GOODSIG" not in words or len(valid) != 1:
        why = bad[0] if bad else f"gpgv exit status {code}"
        raise SignatureRejected(f"Invalid GPG signature: {why}")
    if "PLAINTEXT" not in words:
        raise SignatureRejected("Invalid GPG signature: no signed data (a detached signature)")
    return valid[0][0].upper(), data
