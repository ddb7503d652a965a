from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from tailor.authn import ANONYMOUS, Credentials, from_docker_config, resolve
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
    assert from_docker_config("reg.example:5000", path) == Credentials("alice", "pw:with:colons")
    assert from_docker_config("docker.io", path) == Credentials("bob", "hubpw")
    assert from_docker_config("other.example", path) == ANONYMOUS
    assert from_docker_config("x", tmp_path / "missing.json") == ANONYMOUS


def test_identity_token(tmp_path: Path) -> None:
    path = write(tmp_path, {"auths": {"https://reg.example": {"identitytoken": "rt-1"}}})
    creds = from_docker_config("reg.example", path)
    assert creds.identity_token == "rt-1" and not creds.anonymous


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread server\necho "{\\"Username\\": \\"u-$server\\", \\"Secret\\": \\"s3\\"}"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    path = write(tmp_path, {"credHelpers": {"reg.example": "fake"}})
    assert from_docker_config("reg.example", path) == Credentials("u-reg.example", "s3")


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
    assert creds == Credentials("alice", "hunter2-secret")
    assert "hunter2" not in repr(creds)
    with pytest.raises(ConfigError, match="both a username and a password"):
        resolve("r", "alice", None)
