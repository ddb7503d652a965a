"""Parse a registry's ``WWW-Authenticate`` challenge (RFC 7235 auth-params)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Challenge", "parse_challenge"]

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf"\s*({_TCHARS})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TCHARS}))\s*(?:,|$)")
_SCHEME = re.compile(rf"\s*({_TCHARS})(?:\s+|$)")


@dataclass(frozen=True)
class Challenge:
    """``scheme`` lower-cased (``basic``, ``bearer``) and its parameters (keys lower-cased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()


def parse_challenge(header: str | None) -> Challenge | None:
    """The first challenge of ``header``; ``None`` when there is none we can read."""
    if not header:
        return None
    match = _SCHEME.match(header)
    if not match:
        return None
    scheme = match.group(1).lower()
    params: dict[str, str] = {}
    pos = match.end()
    while pos < len(header):
        param = _PARAM.match(header, pos)
        if not param:
            # A second challenge or junk: what we have read so far stands.
            break
        key = param.group(1).lower()
        quoted = param.group(2)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else param.group(3)
        params.setdefault(key, value)
        pos = param.end()
    return Challenge(scheme, params)
