"""``signedIdentity``: which docker reference written in a signature an image's
reference accepts (containers-policy.json(5)). The image's reference is the one the user
named, normalized (``busybox`` is ``docker.io/library/busybox:latest``); the signed one
is normalized the same way before it is compared, and one that does not parse matches
nothing."""

from __future__ import annotations

from dataclasses import dataclass

from tailor.errors import InvalidReference
from tailor.reference import Reference, parse_reference

__all__ = [
    "ExactReference",
    "ExactRepository",
    "IdentityRule",
    "MatchExact",
    "MatchRepoDigestOrExact",
    "MatchRepository",
    "RemapIdentity",
    "signed_reference",
]


def signed_reference(text: str) -> Reference | None:
    """A signature's ``docker-reference``, normalized; None when it does not parse."""
    try:
        return parse_reference(text, default_tag=None)
    except InvalidReference:
        return None


def _named_only(ref: Reference) -> bool:
    return ref.tag is None and ref.digest is None


class IdentityRule:
    """One ``signedIdentity`` object."""

    kind = ""

    def matches(self, image: Reference, signed: Reference) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class MatchExact(IdentityRule):
    """Both name a tag or digest and the references are equal."""

    kind = "matchExact"

    def matches(self, image: Reference, signed: Reference) -> bool:
        if _named_only(image) or _named_only(signed):
            return False
        return str(image) == str(signed)


@dataclass(frozen=True)
class MatchRepoDigestOrExact(IdentityRule):
    """The default: a tag must be signed exactly; a digest reference needs the signature
    of its repository only (the digest itself is checked against the manifest)."""

    kind = "matchRepoDigestOrExact"

    def matches(self, image: Reference, signed: Reference) -> bool:
        if _named_only(signed):
            return False
        if image.tag is not None:
            return str(image) == str(signed)
        return image.name == signed.name


@dataclass(frozen=True)
class MatchRepository(IdentityRule):
    """The same repository, whatever tag or digest either names."""

    kind = "matchRepository"

    def matches(self, image: Reference, signed: Reference) -> bool:
        return image.name == signed.name


@dataclass(frozen=True)
class ExactReference(IdentityRule):
    """The signature must name exactly ``reference`` (which has a tag or a digest),
    whatever the image's reference is."""

    reference: Reference
    kind = "exactReference"

    def matches(self, image: Reference, signed: Reference) -> bool:
        return not _named_only(signed) and str(self.reference) == str(signed)


@dataclass(frozen=True)
class ExactRepository(IdentityRule):
    """The signature must name the repository ``repository``, whatever the image's."""

    repository: str
    kind = "exactRepository"

    def matches(self, image: Reference, signed: Reference) -> bool:
        return self.repository == signed.name


@dataclass(frozen=True)
class RemapIdentity(IdentityRule):
    """``prefix`` in the image's name read as ``signed_prefix`` (a mirror's images signed
    under the original's names), then the default rule."""

    prefix: str
    signed_prefix: str
    kind = "remapIdentity"

    def remapped(self, image: Reference) -> Reference | None:
        """The image's reference with the prefix replaced; None when the result is not a
        reference in its normalized spelling. Unchanged when the prefix does not apply."""
        if image.name != self.prefix and not image.name.startswith(self.prefix + "/"):
            return image
        text = self.signed_prefix + str(image)[len(self.prefix) :]
        out = signed_reference(text)
        return out if out is not None and str(out) == text else None

    def matches(self, image: Reference, signed: Reference) -> bool:
        remapped = self.remapped(image)
        return remapped is not None and MatchRepoDigestOrExact().matches(remapped, signed)
