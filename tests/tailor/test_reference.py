"""Reference parsing and normalization, as Docker does it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor.errors import InvalidReference
from tailor.reference import Reference, parse_reference

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
