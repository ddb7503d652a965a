"""Platform matching, table-tested from containerd's own cases (github.com/containerd/platforms:
compare_test.go TestOnly and TestOnlyStrict, platforms_test.go TestParseSelector and
TestParseSelectorInvalid; the order from compare.go's platformVector and Only's comment)."""

from __future__ import annotations

import re

import pytest

from tailor.errors import ConfigError
from tailor.platforms import Platform, best, normalize, only, only_strict, parse_platform


def p(text: str) -> Platform:
    """``os[(os.version)]/arch[/variant]``, as containerd's tests write what images declare."""
    found = re.fullmatch(r"([^/(]+)(?:\(([^)]*)\))?/(.*)", text)
    assert found, text
    plain = parse_platform(f"{found[1]}/{found[3]}")
    return Platform(plain.os, plain.architecture, plain.variant, found[2] or "")


# -- normalization --------------------------------------------------------------------------

NORMALIZED = [
    # architecture aliases (platforms.go's table, database.go's normalizeArch)
    ("linux/aarch64", "linux/arm64"),
    ("linux/aarch64/v8", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm64/8", "linux/arm64"),
    ("linux/arm64/v8.0", "linux/arm64"),
    ("linux/arm64/v9.0", "linux/arm64/v9"),
    ("linux/arm64/v8.2", "linux/arm64/v8.2"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/arm/6", "linux/arm/v6"),
    ("linux/arm/v5", "linux/arm/v5"),
    ("linux/i386", "linux/386"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/x86-64", "linux/amd64"),
    ("linux/amd64/v1", "linux/amd64"),
    ("linux/amd64/v2", "linux/amd64/v2"),
    ("Linux/x86_64", "linux/amd64"),
    ("linux/Aarch64", "linux/arm64"),
    ("macOS/arm64", "darwin/arm64"),
    ("linux/s390x", "linux/s390x"),
]


@pytest.mark.parametrize(("given", "canonical"), NORMALIZED)
def test_normalize(given: str, canonical: str) -> None:
    assert str(normalize(parse_platform(given))) == canonical


# TestParseSelector: each specifier matches (strictly) what images declare in other spellings.
SPELLINGS = [
    ("linux/arm64", ["linux/aarch64", "linux/aarch64/v8", "linux/arm64/v8"]),
    ("linux/arm64/v8", ["linux/aarch64", "linux/aarch64/v8", "linux/arm64"]),
    ("linux/arm", ["linux/arm/v7", "linux/armhf", "linux/arm/7"]),
    ("linux/arm/v6", ["linux/armel"]),
    ("linux/arm/v7", ["linux/arm", "linux/armhf"]),
    ("linux/amd64", ["linux/x86_64", "linux/x86-64", "linux/amd64/v1"]),
    ("linux/386", ["linux/i386"]),
]


@pytest.mark.parametrize(("request_", "declared"), SPELLINGS)
def test_spellings_match_strictly(request_: str, declared: list[str]) -> None:
    for other in declared:
        assert only_strict(p(request_)).match(p(other)), other


# -- matching: Only and OnlyStrict ----------------------------------------------------------

ONLY = {
    "linux/amd64": (
        ["linux/amd64", "linux/386"],
        ["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    "linux/amd64/v2": (
        ["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
        ["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64"],
    ),
    "linux/386": (
        ["linux/386"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    "windows/amd64": (
        ["windows/amd64", "windows(10.0.17763)/amd64"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
    ),
    "linux/arm/v8": (
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
        ["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    "linux/arm/v7": (
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
        ["linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64", "windows/arm"],
    ),
    "linux/arm/v6": (
        ["linux/arm/v5", "linux/arm/v6"],
        ["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v7", "linux/arm/v8"],
    ),
    "linux/arm/v5": (
        ["linux/arm/v5"],
        ["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v6", "linux/arm64"],
    ),
    "linux/arm/v4": (
        ["linux/arm/v4"],
        ["linux/amd64", "linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm64"],
    ),
    "linux/arm64/v9": (
        [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "linux/arm64/v8",
            "linux/arm64/v8.1",
            "linux/arm64/v8.2",
            "linux/arm64/v8.3",
            "linux/arm64/v8.4",
            "linux/arm64/v8.5",
            "linux/arm64/v9",
            "linux/arm64/v9.0",
        ],
        ["linux/amd64", "linux/arm/v4", "windows/amd64", "windows/arm", "linux/arm64/v8.6"],
    ),
    "linux/arm64/v8.1": (
        [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "linux/arm64/v8",
            "linux/arm64/v8.1",
        ],
        ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/arm"],
    ),
    "linux/arm64": (
        [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "linux/arm64/v8",
        ],
        ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/arm"],
    ),
}

ONLY_STRICT = {
    "linux/amd64": (["linux/amd64"], ["linux/386", "linux/arm/v7", "linux/arm64"]),
    "linux/386": (["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64"]),
    "windows/amd64": (
        ["windows/amd64", "windows(10.0.17763)/amd64"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
    ),
    "linux/arm/v8": (
        ["linux/arm/v8"],
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm64"],
    ),
    "linux/arm/v7": (
        ["linux/arm", "linux/arm/v7"],
        ["linux/arm/v5", "linux/arm/v6", "linux/arm/v4", "linux/arm/v8", "linux/arm64"],
    ),
    "linux/arm/v6": (["linux/arm/v6"], ["linux/arm/v5", "linux/arm", "linux/arm/v7"]),
    "linux/arm/v5": (["linux/arm/v5"], ["linux/arm", "linux/arm/v4", "linux/arm/v6"]),
    "linux/arm64/v9": (
        ["linux/arm64/v9", "linux/arm64/v9.0"],
        ["linux/arm", "linux/arm/v8", "linux/arm/v9", "linux/arm64/v8", "linux/arm64/v8.1"],
    ),
    "linux/arm64/v8.1": (
        ["linux/arm64/v8.1"],
        ["linux/arm", "linux/arm/v8", "linux/arm64/v8", "linux/arm64/v9"],
    ),
    "linux/arm64": (
        ["linux/arm64", "linux/arm64/v8"],
        ["linux/arm", "linux/arm/v7", "linux/arm/v8", "linux/arm64/v9", "linux/amd64"],
    ),
}


@pytest.mark.parametrize("request_", sorted(ONLY))
def test_only(request_: str) -> None:
    accepted, refused = ONLY[request_]
    matcher = only(p(request_))
    assert [c for c in accepted if not matcher.match(p(c))] == []
    assert [c for c in refused if matcher.match(p(c))] == []


@pytest.mark.parametrize("request_", sorted(ONLY_STRICT))
def test_only_strict(request_: str) -> None:
    accepted, refused = ONLY_STRICT[request_]
    matcher = only_strict(p(request_))
    assert [c for c in accepted if not matcher.match(p(c))] == []
    assert [c for c in refused if matcher.match(p(c))] == []


def test_declared_os_features_must_be_requested() -> None:
    # containerd's matcher: what an image declares in os.features must be a subset of the
    # request's; a request (os/arch[/variant]) names none.
    plain = Platform("windows", "amd64", os_version="10.0.17763.1")
    featured = Platform("windows", "amd64", os_version="10.0.17763.1", os_features=("win32k",))
    assert only(Platform("windows", "amd64")).match(plain)
    assert not only(Platform("windows", "amd64")).match(featured)


# -- ordering: the best match ----------------------------------------------------------------

# What each request accepts, most preferred first (compare.go's platformVector, and Only's
# comment: "For arm/v7, will also match arm/v6 and arm/v5", "For amd64, will also match 386",
# "For arm64/v9.x, will also match arm64/v9.{0..x-1} and arm64/v8.{0..x+5}").
ORDER = {
    "linux/amd64": ["linux/amd64", "linux/386"],
    "linux/amd64/v3": ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"],
    "linux/arm": ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
    "linux/arm/v8": ["linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
    "linux/arm/v6": ["linux/arm/v6", "linux/arm/v5"],
    "linux/arm64": [
        "linux/arm64",
        "linux/arm/v8",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ],
    "linux/arm64/v8.2": [
        "linux/arm64/v8.2",
        "linux/arm64/v8.1",
        "linux/arm64/v8",
        "linux/arm/v8",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ],
    "linux/arm64/v9.1": [
        "linux/arm64/v9.1",
        "linux/arm64/v9",
        "linux/arm64/v8.6",
        "linux/arm64/v8.5",
        "linux/arm64/v8.4",
        "linux/arm64/v8.3",
        "linux/arm64/v8.2",
        "linux/arm64/v8.1",
        "linux/arm64",
        "linux/arm/v8",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ],
}


@pytest.mark.parametrize("request_", sorted(ORDER))
def test_best_takes_the_most_preferred_first(request_: str) -> None:
    expected = ORDER[request_]
    # Offered worst first, with something it does not run in between: the best still wins,
    # and taking each winner away yields the next in the order.
    offered: list[Platform | None] = [p("linux/s390x"), None]
    offered += [p(text) for text in reversed(expected)]
    picked = []
    while (i := best(only(p(request_)), offered)) is not None:
        picked.append(str(normalize(offered[i] or p("x/x"))))
        offered[i] = None
    assert picked == [str(normalize(p(text))) for text in expected]


def test_best_of_equals_is_the_first() -> None:
    amd = [p("linux/amd64"), p("linux/x86_64"), p("linux/amd64/v1")]
    assert best(only(p("linux/amd64")), amd) == 0
    assert best(only(p("linux/amd64")), [None, p("linux/arm64"), *amd]) == 2
    assert best(only(p("linux/amd64")), [p("linux/arm64"), None]) is None
    assert best(only(p("linux/amd64")), []) is None


# -- parsing and formatting ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    # TestParseSelectorInvalid, and a bare os or arch (containerd fills in the host's, which
    # means nothing to a copy or a staging)
    ["", "/linux/arm", "linux/arm/", "linux /arm", "linux/&arm", "linux/arm/foo/bar", "linux"],
)
def test_invalid_requests(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid platform .*: expected os/arch"):
        parse_platform(text)


def test_format_names_os_version_and_features() -> None:
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    assert str(Platform("windows", "amd64", os_version="10.0.17763.5458")) == (
        "windows(10.0.17763.5458)/amd64"
    )
    assert str(Platform("windows", "amd64", "", "10.0.1", ("win32k",))) == (
        "windows(10.0.1+win32k)/amd64"
    )
    assert str(Platform("", "")) == "unknown"
