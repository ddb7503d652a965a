"""``signedIdentity``: which signed references an image's reference accepts, rule by rule
(containers-policy.json(5); the skopeo peer test checks the same rules end to end)."""

from __future__ import annotations

import pytest

from tailor.reference import parse_reference
from tailor.trust.identity import (
    ExactReference,
    ExactRepository,
    IdentityRule,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    RemapIdentity,
    signed_reference,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
TAG = "reg.test:5000/ns/app:v1"
PINNED = f"reg.test:5000/ns/app@{D1}"

CASES: list[tuple[IdentityRule, str, str, bool]] = [
    # (rule, the image's reference, the signed reference, accepted)
    (MatchRepoDigestOrExact(), TAG, TAG, True),
    (MatchRepoDigestOrExact(), TAG, "reg.test:5000/ns/app:v2", False),
    (MatchRepoDigestOrExact(), TAG, "reg.test:5000/ns/app", False),
    (MatchRepoDigestOrExact(), PINNED, "reg.test:5000/ns/app:anything", True),
    (MatchRepoDigestOrExact(), PINNED, f"reg.test:5000/ns/app@{D2}", True),
    (MatchRepoDigestOrExact(), PINNED, "reg.test:5000/ns/app", False),
    (MatchRepoDigestOrExact(), PINNED, "reg.test:5000/ns/other:v1", False),
    (MatchRepoDigestOrExact(), "busybox", "docker.io/library/busybox:latest", True),
    (MatchExact(), TAG, TAG, True),
    (MatchExact(), PINNED, "reg.test:5000/ns/app:v1", False),
    (MatchExact(), PINNED, PINNED, True),
    (MatchRepository(), TAG, "reg.test:5000/ns/app", True),
    (MatchRepository(), PINNED, "reg.test:5000/ns/app:v9", True),
    (MatchRepository(), TAG, "reg.test:5000/ns/other:v1", False),
    (ExactReference(parse_reference("a.test/x:1")), TAG, "a.test/x:1", True),
    (ExactReference(parse_reference("a.test/x:1")), TAG, TAG, False),
    (ExactReference(parse_reference("a.test/x:1")), TAG, "a.test/x", False),
    (ExactRepository("a.test/x"), TAG, "a.test/x:7", True),
    (ExactRepository("a.test/x"), TAG, "a.test/x", True),
    (ExactRepository("a.test/x"), TAG, TAG, False),
    (RemapIdentity("mirror.test:5000", "reg.test:5000"), "mirror.test:5000/ns/app:v1", TAG, True),
    (
        RemapIdentity("mirror.test:5000/ns", "reg.test:5000/ns"),
        "mirror.test:5000/ns/app:v1",
        TAG,
        True,
    ),
    # A prefix matches whole path components only.
    (
        RemapIdentity("mirror.test:5000/n", "reg.test:5000/n"),
        "mirror.test:5000/ns/app:v1",
        TAG,
        False,
    ),
    # Not remapped: the default rule on the image's own reference.
    (RemapIdentity("mirror.test:5000", "reg.test:5000"), TAG, TAG, True),
    # The remapped reference must be in its normalized spelling.
    (
        RemapIdentity("mirror.test:5000/library", "docker.io"),
        "mirror.test:5000/library/busybox:1",
        "busybox:1",
        False,
    ),
]


@pytest.mark.parametrize(("rule", "image", "signed", "accepted"), CASES)
def test_identity_rules(rule: IdentityRule, image: str, signed: str, accepted: bool) -> None:
    parsed = signed_reference(signed)
    assert parsed is not None
    assert rule.matches(parse_reference(image), parsed) is accepted


def test_a_signed_reference_that_does_not_parse_matches_nothing() -> None:
    assert signed_reference("Reg.test/NS/App:v1") is None
    assert signed_reference("not a reference") is None
    assert str(signed_reference("busybox:1")) == "docker.io/library/busybox:1"
