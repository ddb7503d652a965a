"""Canonical JSON (RFC 8785 for the values audit events hold): the bytes that are hashed
and signed. Pure.

Object keys sorted by UTF-16 code units, no white space, strings with only the
escapes JSON requires (``\\"`` ``\\\\`` ``\\b`` ``\\f`` ``\\n`` ``\\r`` ``\\t``,
other controls as ``\\u00xx``), UTF-8, integers in plain decimal; events carry
no other numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical", "canonical_reference"]

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _string(value: str) -> str:
    # Hot path (every audit append): escape only the characters JSON requires.
    return '"' + _NEEDS_ESCAPE.sub(_escape, value) + '"'


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be")


def _canonical(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        raise ValueError("audit events carry integers only")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = sorted(((str(k), v) for k, v in value.items()), key=lambda kv: _utf16_key(kv[0]))
        return "{" + ",".join(f"{_string(k)}:{_canonical(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    raise ValueError(f"cannot put a {type(value).__name__} in the audit log")


def _plain(value: Any) -> bool:
    """True when json.dumps already writes ``value`` canonically: ASCII keys (so code
    point order is UTF-16 order) and no floats (json would write 5.0, not 5).

    Hot path (every event hashed when the chain is verified): a loop, not recursion,
    with exact-type checks first and isinstance only for subclasses."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str or t is int or v is None or t is bool:
            continue
        if t is dict or isinstance(v, dict):
            for k, x in v.items():
                if type(k) is not str or not k.isascii():
                    return False
                tx = type(x)
                if not (tx is str or tx is int or x is None):
                    stack.append(x)
        elif t is list or t is tuple or isinstance(v, list | tuple):
            stack.extend(v)
        elif not isinstance(v, str | int):
            return False
    return True


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) uses,
made once (json.dumps makes one per call when given options)."""


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of ``value``."""
    if _plain(value):
        # The C encoder: the same bytes (tests check it against the reference path).
        return _ENCODER.encode(value).encode()
    return _canonical(value).encode()


def canonical_reference(value: Any) -> bytes:
    """The canonical form written out rule by rule (for values json.dumps can't do)."""
    return _canonical(value).encode()
