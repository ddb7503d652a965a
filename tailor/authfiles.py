"""The credential files container tools keep, and what they say for one image.

Where (:func:`auth_files`), in containers/image's order (podman, skopeo, buildah;
``containers-auth.json(5)``):

1. ``$REGISTRY_AUTH_FILE``: when set, the only file read (as skopeo's and podman's
   ``--authfile``); it must exist.
2. ``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/UID/auth.json`` when the
   variable is unset): ``podman login``'s.
3. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/containers/auth.json``).
4. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``: ``docker login``'s.
5. ``~/.dockercfg``: Docker's legacy file (the ``auths`` map at the top level).

The first file that has credentials for the image gives them. Within one file
(:func:`find`): ``credHelpers`` for the registry, then ``auths`` entries (repository
scoped ``HOST/NAMESPACE/REPO`` keys most specific first, then the registry's own), then
``credsStore``. An entry without credentials (``{}``: the placeholder ``docker login``
writes next to a ``credsStore``) is passed over, and so is a helper that has nothing for
the registry. ``auths`` keys are matched as Docker and containers/image normalize them: a
scheme and what follows the host in a URL (``https://HOST/v2/``, ``http://HOST/``) are
dropped, and so is an API path after a bare host (``HOST/v1/``); Docker Hub is any of
``docker.io``, ``index.docker.io``, ``registry-1.docker.io``.

A missing file is skipped, an unreadable one too (with a warning); a malformed one is a
:class:`ConfigError` naming the file, never its contents.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailor.errors import ConfigError

__all__ = ["AuthFile", "Found", "auth_files", "find", "find_in", "host_key", "server_url"]

_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HUB_SERVER = "https://index.docker.io/v1/"
_API_PATHS = frozenset({"", "v1", "v2"})


@dataclass(frozen=True)
class AuthFile:
    path: Path
    legacy: bool = False
    """``~/.dockercfg``: the ``auths`` map is the whole file."""
    named_by: str = ""
    """The variable that named this very file: it must then be there and readable."""


@dataclass(frozen=True)
class Found:
    """Credentials from a file or a helper: a Basic pair and/or an identity token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""
    """Where they came from (a path, a helper): never a secret."""

    def __bool__(self) -> bool:
        return bool((self.username and self.password) or self.identity_token)


Warn = Callable[[str], None]


def auth_files(environ: Mapping[str, str], home: Path, uid: int) -> list[AuthFile]:
    """The files to read, in order, for this environment (see the module's docstring)."""
    named = environ.get("REGISTRY_AUTH_FILE", "")
    if named:
        return [AuthFile(Path(named), named_by="REGISTRY_AUTH_FILE")]
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    primary = Path(runtime) / "containers" if runtime else Path(f"/run/containers/{uid}")
    config_home = Path(environ.get("XDG_CONFIG_HOME", "") or home / ".config")
    docker = Path(environ.get("DOCKER_CONFIG", "") or home / ".docker")
    return [
        AuthFile(primary / "auth.json"),
        AuthFile(config_home / "containers" / "auth.json"),
        AuthFile(docker / "config.json"),
        AuthFile(home / ".dockercfg", legacy=True),
    ]


def host_key(registry: str) -> str:
    """How a registry is compared with a key: lower case, Docker Hub as ``docker.io``."""
    host = registry.lower()
    return _HUB if host in _HUB_ALIASES else host


def server_url(registry: str) -> str:
    """What Docker hands a helper for ``registry``: ``host[:port]``, or for Docker Hub the
    URL ``docker login`` stores its credentials under."""
    return _HUB_SERVER if host_key(registry) == _HUB else registry


def _normalize(key: str, legacy: bool) -> str:
    """An ``auths`` or ``credHelpers`` key as ``host`` or ``host/namespace/...``."""
    text = key.strip()
    lowered = text.lower()
    scheme = lowered.startswith(("http://", "https://"))
    if scheme:
        text = text.split("://", 1)[1]
    host, _, path = text.partition("/")
    path = path.strip("/")
    if scheme or legacy or path in _API_PATHS:
        return host_key(host)
    return f"{host_key(host)}/{path}"


def _scopes(registry: str, repository: str | None) -> list[str]:
    """The keys an image may be found under, most specific first: ``host/a/b``, ``host/a``,
    ``host``."""
    host = host_key(registry)
    keys = []
    parts = (repository or "").strip("/").split("/") if repository else []
    for end in range(len(parts), 0, -1):
        keys.append("/".join([host, *parts[:end]]))
    keys.append(host)
    return keys


def _load(file: AuthFile, warn: Warn | None) -> dict[str, Any] | None:
    """The file as a JSON object (for a legacy file, ``{"auths": ...}``), or None when
    it is not there (or unreadable, said through ``warn``)."""
    path = file.path
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if file.named_by:
            raise ConfigError(f"{file.named_by} names {path}, which does not exist") from None
        return None
    except OSError as exc:
        if file.named_by:
            raise ConfigError(f"cannot read {path} ({file.named_by}): {exc.strerror}") from None
        if warn is not None:
            warn(f"cannot read {path}: {exc.strerror}; its credentials are not used")
        return None
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if text.strip() else {}  # empty: nothing, as Docker reads it
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON (line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    if file.legacy:
        data = {"auths": data}
    for name in ("auths", "credHelpers"):
        value = data.get(name)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: {name!r} is not a JSON object")
    helpers = data.get("credHelpers") or {}
    if not all(isinstance(v, str) for v in helpers.values()):
        raise ConfigError(f"{path}: every 'credHelpers' value must be a helper name")
    store = data.get("credsStore")
    if store is not None and not isinstance(store, str):
        raise ConfigError(f"{path}: 'credsStore' is not a helper name")
    return data


def _candidates(table: Mapping[str, Any], wanted: str, legacy: bool) -> Iterator[tuple[str, Any]]:
    """The ``(key, value)`` pairs of ``table`` whose key normalizes to ``wanted``: the key
    spelled exactly so first, then the others in the file's order."""
    if wanted in table:
        yield wanted, table[wanted]
    for key, value in table.items():
        if key != wanted and _normalize(key, legacy) == wanted:
            yield key, value


def _from_helper(name: str, registry: str, where: str) -> Found | None:
    from tailor import helperclient  # subprocess: only for a file that names a helper

    if not helperclient.valid_name(name):
        raise ConfigError(f"{where}: credential helper name {name!r} is not a program name suffix")
    got = helperclient.get(name, server_url(registry))
    if got is None:
        return None
    username, secret = got
    source = f"credential helper docker-credential-{name} ({where})"
    if username == helperclient.TOKEN_USERNAME:
        return Found(identity_token=secret, source=source)
    return Found(username, secret, source=source) if username else None


def _entry(entry: object, key: str, path: Path) -> Found:
    """What one ``auths`` entry holds; an empty :class:`Found` for a placeholder."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: the entry for {key!r} is not a JSON object")
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    auth = entry.get("auth") or ""
    identity = entry.get("identitytoken") or ""
    if not all(isinstance(v, str) for v in (username, password, auth, identity)):
        raise ConfigError(f"{path}: the entry for {key!r} has a value that is not a string")
    if auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(
                f"{path}: the 'auth' of {key!r} is not base64 of user:password"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ConfigError(f"{path}: the 'auth' of {key!r} is not base64 of user:password")
        password = password.strip("\x00")  # as Docker and containers/image read it
    return Found(username, password, identity, source=str(path))


def find_in(
    file: AuthFile, registry: str, repository: str | None = None, warn: Warn | None = None
) -> Found | None:
    """What ``file`` gives an image of ``repository`` on ``registry``, else None."""
    data = _load(file, warn)
    if data is None:
        return None
    path = file.path
    host = host_key(registry)
    for name, helper in _candidates(data.get("credHelpers") or {}, host, file.legacy):
        # Helpers are per registry (as in Docker and containers/image), never per repository.
        return _from_helper(helper, registry, f"credHelpers[{name!r}] in {path}")
    auths: Mapping[str, Any] = data.get("auths") or {}
    for scope in _scopes(registry, repository):
        for key, entry in _candidates(auths, scope, file.legacy):
            found = _entry(entry, key, path)
            if found:
                return found
    store = data.get("credsStore") or ""
    if store:
        return _from_helper(store, registry, f"credsStore in {path}")
    return None


def find(
    registry: str,
    repository: str | None = None,
    files: Sequence[AuthFile] | None = None,
    warn: Warn | None = None,
) -> Found | None:
    """The first credentials ``files`` (default: :func:`auth_files` of this process's
    environment) give an image of ``repository`` on ``registry``, else None."""
    if files is None:
        home = Path(os.environ.get("HOME") or Path.home())
        files = auth_files(os.environ, home, os.getuid())
    for file in files:
        found = find_in(file, registry, repository, warn)
        if found:
            return found
    return None
