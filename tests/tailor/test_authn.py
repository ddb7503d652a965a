from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from tailor.authn import (
    ANONYMOUS,
    Anonymous,
    AuthConfig,
    Authenticator,
    Basic,
    IdentityToken,
    PlatformAssertion,
    TokenProvider,
    from_docker_config,
    resolve,
)
from tailor.errors import ConfigError


def write(tmp_path: Path, config: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_entry_by_host_and_hub_aliases(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "auths": {
                "reg.example:5000": {"auth": b64("alice:pw:with:colons")},
                "https://index.docker.io/v1/": {"auth": b64("bob:hubpw")},
            }
        },
    )
    assert from_docker_config("reg.example:5000", path) == Basic("alice", "pw:with:colons")
    assert from_docker_config("docker.io", path) == Basic("bob", "hubpw")
    assert from_docker_config("other.example", path) == ANONYMOUS
    assert from_docker_config("x", tmp_path / "missing.json") == ANONYMOUS


def test_identity_token(tmp_path: Path) -> None:
    path = write(tmp_path, {"auths": {"https://reg.example": {"identitytoken": "rt-1"}}})
    creds = from_docker_config("reg.example", path)
    assert creds == IdentityToken("rt-1")


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread server\necho "{\\"Username\\": \\"u-$server\\", \\"Secret\\": \\"s3\\"}"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    path = write(tmp_path, {"credHelpers": {"reg.example": "fake"}})
    assert from_docker_config("reg.example", path) == Basic("u-reg.example", "s3")


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ("[1]", "not a JSON object"),
        ('{"auths": {"r": {"auth": "!!!"}}}', "not base64"),
        ('{"auths": {"r": {"auth": "' + b64("nocolon") + '"}}}', "not base64"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, config: str, why: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(config)
    with pytest.raises(ConfigError, match=why):
        from_docker_config("r", path)


def test_explicit_credentials_and_repr_hides_secret() -> None:
    creds = resolve("r", "alice", "hunter2-secret")
    assert creds == Basic("alice", "hunter2-secret")
    assert "hunter2" not in repr(creds)
    with pytest.raises(ConfigError, match="both a username and a password"):
        resolve("r", "alice", None)


def test_an_identity_token_entry_keeps_its_basic_fallback(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"auths": {"reg.example": {"auth": b64("carol:pw3"), "identitytoken": "rt-2"}}}
    )
    assert from_docker_config("reg.example", path) == IdentityToken("rt-2", Basic("carol", "pw3"))
    # Half a pair is nothing to fall back on: the token alone.
    for half in ({"username": "carol"}, {"password": "pw3"}):
        path = write(tmp_path, {"auths": {"reg.example": {**half, "identitytoken": "rt-2"}}})
        assert from_docker_config("reg.example", path) == IdentityToken("rt-2")


REALM = "https://broker.example/v1/registry-token"


def test_what_each_authenticator_offers() -> None:
    scopes = ["repository:b:pull", "repository:a:pull"]
    assert ANONYMOUS.authorization(None, scopes) == AuthConfig()
    assert ANONYMOUS.authorization(REALM, scopes) == AuthConfig()
    basic = Basic("alice", "pw")
    assert basic.authorization(None, scopes) == AuthConfig(basic=("alice", "pw"))
    assert basic.authorization(REALM, scopes) == AuthConfig(basic=("alice", "pw"))
    bare = IdentityToken("rt")
    assert bare.authorization(None, scopes) == AuthConfig()
    assert bare.authorization(REALM, scopes) == AuthConfig(identity_token="rt")
    with_fallback = IdentityToken("rt", Basic("alice", "pw"))
    assert with_fallback.authorization(None, scopes) == AuthConfig(basic=("alice", "pw"))
    assert with_fallback.authorization(REALM, scopes) == AuthConfig(
        basic=("alice", "pw"), identity_token="rt"
    )
    minted: list[list[str]] = []

    def mint(wanted: Sequence[str]) -> str:
        minted.append(list(wanted))
        return f"tok-{len(minted)}"

    provider = TokenProvider(mint)
    assert provider.authorization(REALM, scopes) == AuthConfig(registry_token="tok-1")
    assert minted == [sorted(scopes)]
    assert provider.authorization(None, scopes) == AuthConfig()  # not for a Basic challenge


def test_a_platform_assertion_goes_to_the_broker_realm_only() -> None:
    signed = iter(f"assertion-{i}" for i in range(1, 10))
    auth = PlatformAssertion("tailor-1", lambda: next(signed), REALM)

    # Named in errors as the platform identity; its tokens are never widened by a challenge.
    def mine(assertion: str) -> AuthConfig:
        label = "the platform identity tailor-1"
        return AuthConfig(basic=("tailor-1", assertion), label=label, fixed_scopes=True)

    assert auth.authorization(REALM, []) == mine("assertion-1")
    # A fresh assertion for every exchange.
    assert auth.authorization(REALM + "?x=1", []) == mine("assertion-2")
    assert auth.authorization("https://auth.example/token", []) == AuthConfig()
    assert auth.authorization("https://broker.example/other", []) == AuthConfig()
    assert auth.authorization(None, []) == AuthConfig()  # the registry's own Basic challenge
    assert PlatformAssertion("t", lambda: "a", "").authorization(REALM, []) == AuthConfig()


def test_equality_by_value_and_no_secret_in_any_repr() -> None:
    assert Basic("u", "p") == Basic("u", "p") and Basic("u", "p") != Basic("u", "q")
    assert IdentityToken("t", Basic("u", "p")) == IdentityToken("t", Basic("u", "p"))
    some: list[Authenticator] = [Basic("u", "p"), IdentityToken("t")]
    assert Anonymous() == ANONYMOUS and ANONYMOUS not in some

    def sign() -> str:
        return "signed-secret"

    shown = [
        Basic("alice", "hunter2-secret"),
        IdentityToken("refresh-secret", Basic("alice", "hunter2-secret")),
        PlatformAssertion("tailor-1", sign, REALM),
        TokenProvider(lambda scopes: "minted-secret"),
        AuthConfig(("alice", "hunter2-secret"), "refresh-secret", "minted-secret"),
    ]
    for auth in shown:
        text = repr(auth)
        assert "secret" not in text, text
    assert "alice" in repr(shown[0]) and "tailor-1" in repr(shown[2])
