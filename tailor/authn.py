"""Credentials for one registry: given by the caller, or read from Docker's config.json.

Only produces credentials; the transport decides where they may be sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailor.errors import ConfigError

__all__ = ["ANONYMOUS", "Credentials", "from_docker_config", "resolve"]

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A username/password pair, or an OAuth2 refresh (identity) token; both may be empty.

    ``assertion`` makes a fresh client assertion (the platform's own identity) to use as
    the Basic password, but only at a token realm under ``assertion_realm`` (the broker):
    an assertion is a credential for the broker and goes nowhere else.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""
    assertion: Callable[[], str] | None = None
    assertion_realm: str = ""
    token_provider: Callable[[list[str]], str] | None = None
    """Mints a registry bearer token for the given scopes itself (the broker, for its own
    maintenance): the token realm is never asked."""

    @property
    def anonymous(self) -> bool:
        return not (
            self.username
            or self.password
            or self.identity_token
            or self.assertion
            or self.token_provider
        )

    def basic_for_realm(self, realm: str) -> tuple[str, str] | None:
        """The (user, password) to present to the token realm ``realm``, if any."""
        if self.assertion is not None:
            if self.assertion_realm and realm.startswith(self.assertion_realm):
                return self.username, self.assertion()
            return None
        return (self.username, self.password) if self.username else None

    def __repr__(self) -> str:
        # Never let a secret reach a log through repr().
        secret = "***" if not self.anonymous else ""
        return f"Credentials(username={self.username!r}, secret={secret!r})"


ANONYMOUS = Credentials()


def _config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(base) / "config.json"


def _keys_for(registry: str) -> list[str]:
    if registry == "docker.io":
        return list(_HUB_KEYS)
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"]


def _from_helper(helper: str, server: str) -> Credentials:
    # The helper protocol: server URL on stdin, JSON {Username, Secret} on stdout.
    try:
        out = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=server.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"credential helper {helper!r} could not run: {type(exc).__name__}"
        ) from None
    if out.returncode != 0:
        return ANONYMOUS
    try:
        data = json.loads(out.stdout)
        username, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    except (ValueError, AttributeError):
        raise ConfigError(f"credential helper {helper!r} gave an unreadable answer") from None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def from_docker_config(registry: str, path: Path | None = None) -> Credentials:
    """Credentials for ``registry`` (normalized host[:port]) from config.json, else anonymous."""
    path = path or _config_path()
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return ANONYMOUS
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError
    except ValueError:
        raise ConfigError(f"{path} is not a JSON object") from None

    keys = _keys_for(registry)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
            return _from_helper(helpers[key], key)
    auths = config.get("auths") or {}
    entry = next((auths[k] for k in keys if isinstance(auths, dict) and k in auths), None)
    if isinstance(entry, dict):
        return _entry_credentials(entry, path)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, keys[0])
    return ANONYMOUS


def _entry_credentials(entry: dict[str, object], path: Path) -> Credentials:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"{path}: an 'auth' entry is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ConfigError(f"{path}: an 'auth' entry is not base64 of user:password")
    identity = str(entry.get("identitytoken") or "")
    return Credentials(username=username, password=password, identity_token=identity)


def resolve(registry: str, username: str | None, password: str | None) -> Credentials:
    """Explicit credentials win; a username without a password is an error; else config.json."""
    if username or password:
        if not (username and password):
            raise ConfigError(f"credentials for {registry} need both a username and a password")
        return Credentials(username=username, password=password)
    return from_docker_config(registry)
