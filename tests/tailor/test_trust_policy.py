"""containers-policy.json parsed as strictly as containers/image parses it, and the scope
whose requirements apply (docs/tailor.md, "Signature policy")."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tailor.reference import parse_reference
from tailor.trust.identity import (
    ExactReference,
    ExactRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    RemapIdentity,
)
from tailor.trust.policy import (
    AcceptAnything,
    PolicyError,
    Reject,
    SignedBy,
    SigstoreSigned,
    load_policy,
    parse_policy,
    scopes,
)

DIGEST = "sha256:" + "ab" * 32
ACCEPT = {"type": "insecureAcceptAnything"}
REJECT = {"type": "reject"}


def policy(doc: object) -> bytes:
    return json.dumps(doc).encode()


def signed_by(**extra: object) -> dict[str, object]:
    return {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg", **extra}


def test_scopes_run_from_the_reference_to_the_wildcards_of_the_host() -> None:
    ref = parse_reference("a.b.example.com:5000/ns1/ns2/app:v1")
    assert scopes(ref) == [
        "a.b.example.com:5000/ns1/ns2/app:v1",
        "a.b.example.com:5000/ns1/ns2/app",
        "a.b.example.com:5000/ns1/ns2",
        "a.b.example.com:5000/ns1",
        "a.b.example.com:5000",
        "*.b.example.com",
        "*.example.com",
        "*.com",
    ]
    pinned = parse_reference(f"busybox@{DIGEST}")
    assert scopes(pinned)[:4] == [
        f"docker.io/library/busybox@{DIGEST}",
        "docker.io/library/busybox",
        "docker.io/library",
        "docker.io",
    ]
    assert scopes(parse_reference("localhost:5000/app"))[-1] == "localhost:5000"


def test_the_most_specific_scope_wins_and_nothing_merges() -> None:
    doc = {
        "default": [REJECT],
        "transports": {
            "docker": {
                "reg.example:5000": [ACCEPT],
                "reg.example:5000/team": [signed_by()],
                "reg.example:5000/team/app:v1": [REJECT],
                "*.example": [ACCEPT, ACCEPT],
                "": [signed_by(keyPath="/other.gpg")],
            },
            "dir": {"": [ACCEPT]},
        },
    }
    p = parse_policy(policy(doc))

    def pick(text: str) -> tuple[str, tuple[str, ...]]:
        scope, reqs = p.requirements_for(parse_reference(text))
        return scope, tuple(r.kind for r in reqs)

    assert pick("reg.example:5000/team/app:v1") == (
        'docker "reg.example:5000/team/app:v1"',
        ("reject",),
    )
    assert pick("reg.example:5000/team/app:v2") == ('docker "reg.example:5000/team"', ("signedBy",))
    assert pick("reg.example:5000/other/app:v1") == (
        'docker "reg.example:5000"',
        ("insecureAcceptAnything",),
    )
    # The port is part of a registry scope; a wildcard never carries one.
    assert pick("reg.example/app:v1")[0] == 'docker "*.example"'
    assert pick("elsewhere.test/app:v1") == ('docker ""', ("signedBy",))
    assert (
        parse_policy(policy({"default": [REJECT]})).requirements_for(parse_reference("x.test/a"))[0]
        == "default"
    )


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({}, "default policy is missing"),
        ({"default": []}, "non-empty list"),
        ({"default": None}, "non-empty list"),
        ({"default": [ACCEPT], "extra": 1}, 'unknown key "extra"'),
        ({"default": [{"type": "insecureAcceptAnything", "x": 1}]}, 'unknown key "x"'),
        ({"default": [{"type": "nope"}]}, 'unknown policy requirement type "nope"'),
        ({"default": [{"type": "signedBy", "keyPath": "/k"}]}, "keyType must be GPGKeys"),
        ({"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}, "none of them present"),
        (
            {"default": [signed_by(keyData="AAAA")]},
            "more than one present",
        ),
        ({"default": [signed_by(keyPath="")]}, "keyPath must be a non-empty string"),
        ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "%%"}]}, "not base64"),
        ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "é"}]}, "not base64"),
        (
            {"default": [signed_by(signedIdentity={"type": "matchSomething"})]},
            'unknown policy reference match type "matchSomething"',
        ),
        ({"default": [signed_by(signedIdentity=None)]}, "a JSON object expected"),
        (
            {
                "default": [
                    signed_by(
                        signedIdentity={"type": "exactReference", "dockerReference": "a.test/b"}
                    )
                ]
            },
            "neither a tag nor digest",
        ),
        (
            {
                "default": [
                    signed_by(
                        signedIdentity={
                            "type": "remapIdentity",
                            "prefix": "a.test/x:1",
                            "signedPrefix": "b.test",
                        }
                    )
                ]
            },
            'prefix "a.test/x:1" is not valid',
        ),
        ({"default": [ACCEPT], "transports": {"docker": {"a.test": []}}}, "non-empty list"),
        ({"default": [ACCEPT], "transports": {"docker": None}}, "a JSON object expected"),
        (
            {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "fulcio": {}}]},
            'unknown key "fulcio"',
        ),
    ],
)
def test_an_invalid_policy_is_refused_whole(doc: object, says: str) -> None:
    with pytest.raises(PolicyError, match=r"invalid policy in p\.json: ") as info:
        parse_policy(policy(doc), "p.json")
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def test_a_duplicate_key_or_trailing_junk_is_refused() -> None:
    with pytest.raises(PolicyError, match='Duplicate key "default"'):
        parse_policy(b'{"default": [{"type": "reject"}], "default": [{"type": "reject"}]}')
    with pytest.raises(PolicyError, match="not JSON"):
        parse_policy(b'{"default": [{"type": "reject"}]} x')


def test_requirements_parse_into_their_kinds(tmp_path: Path) -> None:
    key = base64.b64encode(b"key bytes").decode()
    doc = {
        "default": [
            ACCEPT,
            REJECT,
            signed_by(),
            {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/a", "/b"]},
            {
                "type": "signedBy",
                "keyType": "GPGKeys",
                "keyData": key,
                "signedIdentity": {"type": "matchRepository"},
            },
            {"type": "sigstoreSigned", "keyData": key},
        ],
        "transports": {
            "docker": {"a.test": [signed_by(signedIdentity={"type": "matchExact"})]},
            "nosuch": {"whatever": [ACCEPT]},
        },
    }
    path = tmp_path / "policy.json"
    path.write_bytes(policy(doc))
    p = load_policy(path)
    a, r, one, two, data, sig = p.default
    assert isinstance(a, AcceptAnything) and isinstance(r, Reject)
    assert isinstance(one, SignedBy) and one.keys.paths == (Path("/k.gpg"),)
    assert isinstance(one.identity, MatchRepoDigestOrExact)
    assert isinstance(two, SignedBy) and two.keys.paths == (Path("/a"), Path("/b"))
    assert isinstance(data, SignedBy) and data.keys.load() == b"key bytes"
    assert isinstance(data.identity, MatchRepository)
    assert isinstance(sig, SigstoreSigned)
    (scoped,) = p.docker["a.test"]
    assert isinstance(scoped, SignedBy) and isinstance(scoped.identity, MatchExact)
    assert p.digest.startswith("sha256:") and p.source == str(path)


def test_identity_objects_parse_with_their_arguments() -> None:
    def identity(obj: dict[str, object]) -> object:
        (req,) = parse_policy(policy({"default": [signed_by(signedIdentity=obj)]})).default
        assert isinstance(req, SignedBy)
        return req.identity

    exact = identity({"type": "exactReference", "dockerReference": "busybox:1"})
    assert isinstance(exact, ExactReference)
    assert str(exact.reference) == "docker.io/library/busybox:1"
    repo = identity({"type": "exactRepository", "dockerRepository": "a.test/ns/app:ignored"})
    assert isinstance(repo, ExactRepository) and repo.repository == "a.test/ns/app"
    remap = identity(
        {"type": "remapIdentity", "prefix": "mirror.test:5000", "signedPrefix": "a.test/ns"}
    )
    assert remap == RemapIdentity("mirror.test:5000", "a.test/ns")


def test_an_unreadable_policy_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"cannot read the policy .*missing.json: No such file"):
        load_policy(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "prefix", ["docker.io/busybox", "team/app", "busybox", "UPPER/x", "h:5000"]
)
def test_remap_prefixes_are_admitted_in_any_spelling_containers_image_admits(prefix: str) -> None:
    """skopeo loads these; a spelling that is not normalized simply never matches."""
    remap = {"type": "remapIdentity", "prefix": prefix, "signedPrefix": "a.test/ns"}
    (req,) = parse_policy(policy({"default": [signed_by(signedIdentity=remap)]})).default
    assert isinstance(req, SignedBy) and req.identity == RemapIdentity(prefix, "a.test/ns")
