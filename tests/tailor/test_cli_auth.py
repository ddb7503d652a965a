"""Which credentials `tailor copy` uses on each side (tailor/cli.py): the user's, else the
platform identity (for the broker's realm only), else none."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tailor.authn import ANONYMOUS, AuthConfig, Basic, PlatformAssertion
from tailor.cli import _copy_identity, _side_auth
from tailor.errors import ConfigError

REALM = "https://broker.example/v1/registry-token"
SRC = ("TAILOR_SRC_PASSWORD", "--src-username")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "TAILOR_SRC_PASSWORD",
        "TAILOR_DEST_PASSWORD",
        "TAILOR_BROKER_URL",
        "TAILOR_CLIENT_ID",
        "TAILOR_CLIENT_KEY",
        "REGISTRY_AUTH_FILE",
        "XDG_CONFIG_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


def test_the_users_credentials_win_then_the_platform_identity_then_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    identity = PlatformAssertion("cell-1", lambda: "assertion", REALM)
    # Nothing given: the identity (it offers itself to the broker's realm only), or nothing.
    assert _side_auth("reg.local:5000", None, *SRC, identity) is identity
    assert _side_auth("reg.local:5000", None, *SRC, None) == ANONYMOUS
    # config.json's entry for that registry wins over the identity.
    pair = base64.b64encode(b"bob:from-config").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"reg.local:5000": {"auth": pair}}}))
    assert _side_auth("reg.local:5000", None, *SRC, identity) == Basic("bob", "from-config")
    assert _side_auth("other.local:5000", None, *SRC, identity) is identity
    # The username option with its password variable wins over both.
    monkeypatch.setenv("TAILOR_SRC_PASSWORD", "from-env")
    assert _side_auth("reg.local:5000", "alice", *SRC, identity) == Basic("alice", "from-env")
    with pytest.raises(ConfigError, match="TAILOR_SRC_PASSWORD is set but --src-username"):
        _side_auth("reg.local:5000", None, *SRC, identity)


def test_each_side_gets_the_entry_for_its_own_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # podman login reg.local:5000/team writes a repository-scoped key; the copy's source and
    # destination on one registry may then get different credentials.
    def pair(text: str) -> dict[str, str]:
        return {"auth": base64.b64encode(text.encode()).decode()}

    auth = tmp_path / "run" / "containers" / "auth.json"
    auth.parent.mkdir(parents=True)
    auth.write_text(
        json.dumps(
            {"auths": {"reg.local:5000/team": pair("team:t"), "reg.local:5000": pair("all:a")}}
        )
    )
    assert _side_auth("reg.local:5000", None, *SRC, None, "team/app") == Basic("team", "t")
    assert _side_auth("reg.local:5000", None, *SRC, None, "apps/app") == Basic("all", "a")
    # REGISTRY_AUTH_FILE, when set, is the only file read.
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"auths": {}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(named))
    assert _side_auth("reg.local:5000", None, *SRC, None, "team/app") == ANONYMOUS


def test_the_copy_identity_reads_its_key_only_when_the_brokers_realm_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _copy_identity() is None
    monkeypatch.setenv("TAILOR_BROKER_URL", "https://broker.example/")
    monkeypatch.setenv("TAILOR_CLIENT_ID", "cell-1")
    assert _copy_identity() is None  # all three variables, or no identity
    monkeypatch.setenv("TAILOR_CLIENT_KEY", "/nonexistent/cell-1.pem")
    identity = _copy_identity()
    assert identity is not None and identity.realm == REALM
    # Another realm, or a Basic challenge: nothing offered, and the key is never read.
    assert identity.authorization("https://auth.example/token", ["repository:a:pull"]) == (
        AuthConfig()
    )
    assert identity.authorization(None, []) == AuthConfig()
    with pytest.raises(ConfigError, match=r"cannot read client key /nonexistent/cell-1\.pem"):
        identity.authorization(REALM, ["repository:a:pull"])
