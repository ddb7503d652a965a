"""Platforms: parse, normalize, match and rank them as containerd's ``platforms`` package does.

Pure. A request (``--platform``, the cells' platform) is ``os/arch[/variant]``; what an
index entry or an image config declares is compared with it after normalization
(``aarch64`` -> ``arm64``, ``x86_64`` -> ``amd64``, ``armhf`` -> ``arm/v7``, ``arm64/v8``
-> ``arm64``, ``arm`` -> ``arm/v7``, ``amd64/v1`` -> ``amd64``, ...). :func:`only` accepts
what the platform can also run, in containerd's order of preference: ``arm/v7`` takes v7,
then v6, then v5; ``arm64`` takes arm64, then 32-bit arm v8 down to v5; ``amd64/v3`` takes
v3, v2, v1, then 386; ``amd64`` takes amd64, then 386. :func:`only_strict` accepts the
platform alone. :func:`best` picks the most preferred of several candidates, the first of
equals (containerd's ``LimitManifests``: a stable sort by preference).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tailor.errors import ConfigError

__all__ = ["Matcher", "Platform", "best", "normalize", "only", "only_strict", "parse_platform"]

_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Platform:
    """An OCI platform; ``os_version`` and ``os_features`` come only from what images declare."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        # containerd's FormatAll: ``windows(10.0.17763.5458)/amd64``, ``linux/arm/v7``.
        options = self.os_version + "".join("+" + f for f in sorted(self.os_features))
        head = f"{self.os}({options})" if options else self.os
        return "/".join(p for p in (head or "unknown", self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]``, e.g. ``linux/arm64/v8``; kept as written (matching normalizes)."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(_COMPONENT.match(p) for p in parts):
        raise ConfigError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return arch, variant


def normalize(platform: Platform) -> Platform:
    """The canonical spelling: lower case, ``macos`` -> ``darwin``, the architecture table."""
    os_name = platform.os.lower()
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = _normalize_arch(platform.architecture, platform.variant)
    features = tuple(sorted(set(platform.os_features)))
    return Platform(os_name, arch, variant, platform.os_version, features)


def _number(variant: str) -> int | None:
    digits = variant[1:] if variant.startswith("v") else variant
    return int(digits) if digits.isdigit() else None


def _same(p: Platform, variant: str, arch: str | None = None) -> Platform:
    return Platform(p.os, arch or p.architecture, variant, p.os_version, p.os_features)


def _arm64_vector(p: Platform) -> list[Platform]:
    """arm64/v9.x: v9.{x-1..0}, then v8.{x+5..0}; arm64/v8.x: v8.{x-1..0}; then 32-bit arm."""
    variant = p.variant or "v8"
    out: list[Platform] = []
    major_text, dot, minor_text = variant.partition(".")
    major = _number(major_text) if major_text.startswith("v") else None
    if major is not None and major >= 8:
        minor = int(minor_text) if dot and len(variant) == 4 and minor_text.isdigit() else 0
        if major == 9:
            out += [_same(p, f"v9.{m}" if m else "v9") for m in range(minor - 1, -1, -1)]
            minor, major = minor + 5, 8
            out.append(_same(p, f"v8.{minor}"))
        out += [_same(p, f"v{major}.{m}" if m else f"v{major}") for m in range(minor - 1, -1, -1)]
    if variant.startswith(("v8.", "v9.")):
        variant = "v8"
    return out + _vector(_same(p, variant, "arm"))


def _vector(p: Platform) -> list[Platform]:
    """The platforms ``p`` runs, most preferred first (containerd's ``platformVector``)."""
    out = [p]
    if p.architecture == "amd64":
        level = _number(p.variant)
        if level is not None and level > 1:
            out += [_same(p, f"v{n}") for n in range(level - 1, 0, -1)]
        out.append(_same(p, "", "386"))
    elif p.architecture == "arm":
        level = _number(p.variant)
        if level is not None and level > 5:
            out += [_same(p, f"v{n}") for n in range(level - 1, 4, -1)]
    elif p.architecture == "arm64":
        out += _arm64_vector(p)
    return out


def _equal(wanted: Platform, candidate: Platform) -> bool:
    """containerd's ``NewMatcher``: os, architecture and variant equal once normalized; the
    candidate's os.features a subset of the wanted ones. A request names no OS version, and
    containerd then accepts any (its Windows build check needs one on both sides)."""
    w, c = normalize(wanted), normalize(candidate)
    same = (w.os, w.architecture, w.variant) == (c.os, c.architecture, c.variant)
    return same and set(c.os_features) <= set(w.os_features)


@dataclass(frozen=True)
class Matcher:
    """Accepts the platforms of ``order``; the earlier in it, the more preferred."""

    order: tuple[Platform, ...]

    def rank(self, candidate: Platform) -> int | None:
        """Where ``candidate`` stands in the preference (0 is best); None: not accepted."""
        for i, wanted in enumerate(self.order):
            if _equal(wanted, candidate):
                return i
        return None

    def match(self, candidate: Platform) -> bool:
        return self.rank(candidate) is not None


def only(platform: Platform) -> Matcher:
    """``platform`` and what it can also run, in order (containerd's ``platforms.Only``)."""
    # The normalized arm64 spelling drops v8; the vector starts from it (v8 is the default).
    return Matcher(tuple(_vector(normalize(platform))))


def only_strict(platform: Platform) -> Matcher:
    """``platform`` alone, however spelled (containerd's ``platforms.OnlyStrict``)."""
    return Matcher((normalize(platform),))


def best(matcher: Matcher, candidates: Sequence[Platform | None]) -> int | None:
    """The index of the most preferred candidate, the first of equals; None if none fits."""
    chosen: tuple[int, int] | None = None
    for i, candidate in enumerate(candidates):
        rank = None if candidate is None else matcher.rank(candidate)
        if rank is not None and (chosen is None or rank < chosen[0]):
            chosen = (rank, i)
    return None if chosen is None else chosen[1]
