"""OpenPGP keyrings as far as the policy needs them: ASCII armour removed, and the
fingerprints of the primary keys (RFC 4880, version 4 keys), which decide whose
signatures are accepted. Nothing here verifies a signature: ``gpgv`` does."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from tailor.errors import ConfigError

__all__ = ["dearmor", "primary_fingerprints", "public_keyring"]

_ARMOR = re.compile(
    rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----",
    re.DOTALL,
)
_PUBLIC_KEY = 6
"""The packet tag of a primary public key; subkeys (14) sign too but are not trusted."""
_SECRET_KEYS = frozenset({5, 7})
"""Secret key and secret subkey packets."""


def dearmor(data: bytes) -> bytes:
    """The binary keyring in ``data``: every ASCII-armoured key block decoded and joined,
    or ``data`` itself when it is not armoured."""
    blocks = _ARMOR.findall(data)
    if not blocks:
        return data
    out = b""
    for block in blocks:
        # Armour headers ("Comment: ...") end at the first empty line; the CRC line starts
        # with "=" and is left out (the packets carry their own structure).
        head, sep, body = block.replace(b"\r\n", b"\n").partition(b"\n\n")
        lines = (body if sep else head).split(b"\n")
        text = b"".join(line.strip() for line in lines if not line.startswith(b"="))
        try:
            out += base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ConfigError(f"an armoured key block is not base64: {exc}") from None
    return out


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """``(tag, body)`` of each packet; ConfigError for what is not OpenPGP."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        first = data[i]
        if not first & 0x80:
            raise ConfigError(f"not an OpenPGP keyring (byte 0x{first:02x} at {i})")
        if first & 0x40:  # the new packet format
            tag = first & 0x3F
            if i + 1 >= len(data):
                raise ConfigError("a truncated OpenPGP packet")
            o1 = data[i + 1]
            if o1 < 192:
                length, i = o1, i + 2
            elif o1 < 224:
                if i + 2 >= len(data):
                    raise ConfigError("a truncated OpenPGP packet")
                length, i = ((o1 - 192) << 8) + data[i + 2] + 192, i + 3
            elif o1 == 255:
                length, i = int.from_bytes(data[i + 2 : i + 6], "big"), i + 6
            else:
                raise ConfigError("a partial-length OpenPGP packet in a keyring")
        else:
            tag, kind = (first >> 2) & 0x0F, first & 0x03
            if kind == 3:
                length, i = len(data) - i - 1, i + 1
            else:
                size = 1 << kind
                length, i = int.from_bytes(data[i + 1 : i + 1 + size], "big"), i + 1 + size
        if i + length > len(data):
            raise ConfigError("a truncated OpenPGP packet")
        out.append((tag, data[i : i + length]))
        i += length
    return out


def primary_fingerprints(keyring: bytes) -> list[str]:
    """The upper-case hex fingerprints of the keyring's primary keys, in order (version 4
    keys: SHA-1 of 0x99, the two-byte length and the key packet's body)."""
    out = []
    for tag, body in _packets(dearmor(keyring)):
        if tag == _PUBLIC_KEY and body[:1] == b"\x04":
            framed = b"\x99" + len(body).to_bytes(2, "big") + body
            out.append(hashlib.sha1(framed, usedforsecurity=False).hexdigest().upper())
    return out


def public_keyring(data: bytes, name: str) -> bytes:
    """``data`` as a binary keyring of public keys only: ConfigError (one line, naming
    ``name``) for a file holding a secret key, anything but OpenPGP, or no primary key.
    What the broker serves to every staging task goes through here."""
    if b"PRIVATE KEY BLOCK" in data:
        raise ConfigError(f"{name} holds a secret key: give the public key only")
    binary = dearmor(data)
    packets = _packets(binary)
    if any(tag in _SECRET_KEYS for tag, _ in packets):
        raise ConfigError(f"{name} holds a secret key: give the public key only")
    if not any(tag == _PUBLIC_KEY for tag, _ in packets):
        raise ConfigError(f"{name} holds no OpenPGP public key")
    return binary
