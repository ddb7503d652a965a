from __future__ import annotations

import pytest

from tailor.challenge import Challenge, parse_challenge


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="Registry Realm"', Challenge("basic", {"realm": "Registry Realm"})),
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:samalba/my-app:pull,push",
                },
            ),
        ),
        (
            'bearer Realm="x", error="insufficient_scope", scope="a:b:pull c:d:push"',
            Challenge(
                "bearer",
                {"realm": "x", "error": "insufficient_scope", "scope": "a:b:pull c:d:push"},
            ),
        ),
        ('Bearer realm="a\\"b"', Challenge("bearer", {"realm": 'a"b'})),
        ("Bearer realm=token68ish", Challenge("bearer", {"realm": "token68ish"})),
        ("Negotiate", Challenge("negotiate", {})),
        ("", None),
        (None, None),
        ("=broken", None),
    ],
)
def test_parse(header: str | None, expected: Challenge | None) -> None:
    assert parse_challenge(header) == expected


def test_scopes_split_on_spaces() -> None:
    challenge = parse_challenge('Bearer realm="r",scope="repository:a:pull repository:b:push"')
    assert challenge is not None
    assert challenge.scopes == ["repository:a:pull", "repository:b:push"]
