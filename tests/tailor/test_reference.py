"""Reference parsing and normalization, as Docker does it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor.errors import InvalidReference
from tailor.reference import Reference, parse_reference, registry_identity

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
        ("library/ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("index.docker.io/library/ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("registry-1.docker.io/x/y", "docker.io", "x/y", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("ghcr.io/org/app@" + D, "ghcr.io", "org/app", None, D),
        ("ghcr.io/org/app:v2@" + D, "ghcr.io", "org/app", "v2", D),
        ("quay.io/a-b/c_d.e__f:T_a-g.1", "quay.io", "a-b/c_d.e__f", "T_a-g.1", None),
        ("Registry/app", "Registry", "app", "latest", None),
    ],
)
def test_parse_and_normalize(text, registry, repository, tag, digest) -> None:
    ref = parse_reference(text)
    assert ref == Reference(registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("team/App", "lower-case"),
        ("app:", "bad tag"),
        ("app:-x", "bad tag"),
        ("app@sha256:abc", "bad digest"),
        ("app@sha256:" + "AB" * 32, "64 lower-case hex"),
        ("host:99999/app", "bad registry host"),
        ("host:5000/", "no repository"),
        ("a//b", "bad path component"),
        ("a/b-/c", "bad path component"),
        ("https://host/app", "not a URL"),
        ("app tag", "white space"),
        (" app", "white space"),
        ("x.io/" + "a" * 300, "longer than 255"),
    ],
)
def test_bad_references_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        parse_reference(text)


def test_endpoint_and_strings() -> None:
    hub = parse_reference("ubuntu")
    assert hub.endpoint == "registry-1.docker.io"
    assert str(hub) == "docker.io/library/ubuntu:latest"
    local = parse_reference("127.0.0.1:5000/a:v1")
    assert local.endpoint == "127.0.0.1:5000"
    assert str(local.with_digest(D)) == f"127.0.0.1:5000/a@{D}"
    assert local.identifier == "v1"
    assert parse_reference(f"a:v1@{D}").identifier == D
    assert parse_reference("a", default_tag=None).tag is None


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert "\n" not in str(exc)
    else:
        # What parses round-trips to itself.
        assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("spellings", "insecure", "identity"),
    [
        (
            ["localhost:5000", "127.0.0.1:5000", "[::1]:5000", "LocalHost:5000", "[0::1]:5000"],
            False,
            "localhost:5000",
        ),
        (["localhost", "127.0.0.1", "::1", "[::1]", "localhost:443"], False, "localhost:443"),
        (["localhost", "127.0.0.1", "[::1]", "localhost:80", "[::1]:80"], True, "localhost:80"),
        (
            ["docker.io", "index.docker.io", "registry-1.docker.io", "Docker.IO:443"],
            False,
            "docker.io:443",
        ),
        (["Registry.Internal:5000", "registry.internal:5000"], True, "registry.internal:5000"),
        (["reg.example", "reg.example:443", "REG.EXAMPLE"], False, "reg.example:443"),
        (["reg.example", "reg.example:80"], True, "reg.example:80"),
        (["[FE80::1]", "[fe80:0::1]:443", "fe80::1"], False, "[fe80::1]:443"),
        (["10.0.0.1:5000"], False, "10.0.0.1:5000"),
    ],
)
def test_a_registry_is_what_it_is_not_how_it_is_spelled(
    spellings: list[str], insecure: bool, identity: str
) -> None:
    assert {registry_identity(s, insecure=insecure) for s in spellings} == {identity}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("localhost:5000", "localhost:5001"),
        ("localhost:5000", "127.0.0.2:5000"),  # another loopback address, another server
        ("localhost:5000", "registry.internal:5000"),
        ("reg.example", "reg.example:80"),  # https: 443
        ("reg.example", "reg.example:5000"),
        ("docker.io", "quay.io"),
        ("::1:5000", "[::1]:5000"),  # a bare IPv6 address has no port: ::1:5000 is an address
    ],
)
def test_different_registries_stay_different(a: str, b: str) -> None:
    assert registry_identity(a) != registry_identity(b)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("http://reg:5000", "give HOST"),
        ("reg:5000/app", "give HOST"),
        ("reg 5000", "give HOST"),
        ("reg:0", "bad host"),
        ("reg:99999", "bad host"),
        ("[::1]:0", "bad port"),
        ("[::g]:5000", "bad host"),
        ("a_b", "bad host"),
        ("::1::2", "bad host"),
    ],
)
def test_a_bad_registry_name_says_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        registry_identity(text)


@given(st.text(max_size=80))
def test_every_parsed_reference_has_a_registry_identity(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return
    assert registry_identity(ref.registry).rsplit(":", 1)[1].isdigit()
