"""containers-policy.json(5), parsed as strictly as containers/image parses it, and the
scope whose requirements apply to an image.

An unknown key, a duplicate key, an empty requirement list, an unknown requirement or
identity type: the whole policy is invalid (PolicyError), before anything is fetched.
Only the ``docker`` transport's scopes apply to the registries the tailor reads; other
transports' sections are accepted and ignored, as containers/image ignores transports it
does not know.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tailor.errors import ConfigError, InvalidReference
from tailor.reference import Reference, parse_reference
from tailor.trust import strictjson
from tailor.trust.identity import (
    ExactReference,
    ExactRepository,
    IdentityRule,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    RemapIdentity,
)
from tailor.trust.openpgp import dearmor

__all__ = [
    "AcceptAnything",
    "Policy",
    "PolicyError",
    "Reject",
    "Requirement",
    "SignedBaseLayer",
    "SignedBy",
    "SigstoreSigned",
    "load_policy",
    "parse_policy",
    "scopes",
]

_MAX_POLICY = 1 << 20


class PolicyError(ConfigError):
    """The policy file cannot be used: nothing is evaluated with it."""


class Requirement:
    """One requirement of a scope; every one of a scope's must accept the image."""

    kind = ""


@dataclass(frozen=True)
class AcceptAnything(Requirement):
    kind = "insecureAcceptAnything"


@dataclass(frozen=True)
class Reject(Requirement):
    kind = "reject"


@dataclass(frozen=True)
class KeySource:
    """Where a requirement's keys are: files (read at each use) or inline bytes."""

    paths: tuple[Path, ...] = ()
    data: bytes | None = None

    def load(self) -> bytes:
        """The keys' bytes (for several files, each one's armour removed before they are
        joined); ConfigError naming a file that cannot be read."""
        if self.data is not None:
            return self.data
        out = b""
        for path in self.paths:
            try:
                out += dearmor(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"open {path}: {exc.strerror or exc}") from None
        return out

    def describe(self) -> str:
        if self.data is not None:
            return "keyData"
        return ", ".join(str(p) for p in self.paths)


@dataclass(frozen=True)
class SignedBy(Requirement):
    """Simple-signing signatures by one of the keys (``keyType: GPGKeys``)."""

    key_type: str
    keys: KeySource
    identity: IdentityRule = field(default_factory=MatchRepoDigestOrExact)
    kind = "signedBy"


@dataclass(frozen=True)
class SigstoreSigned(Requirement):
    """A cosign-format signature by the public key (PEM), in a ``sha256-HEX.sig`` tag."""

    keys: KeySource
    identity: IdentityRule = field(default_factory=MatchRepoDigestOrExact)
    kind = "sigstoreSigned"


@dataclass(frozen=True)
class SignedBaseLayer(Requirement):
    """Parsed as containers/image parses it; like it, never accepts anything."""

    kind = "signedBaseLayer"


@dataclass(frozen=True)
class Policy:
    default: tuple[Requirement, ...]
    docker: dict[str, tuple[Requirement, ...]]
    docker_default: tuple[Requirement, ...] | None
    digest: str
    """sha256 of the file's bytes: which policy decided."""
    source: str

    def requirements_for(self, image: Reference) -> tuple[str, tuple[Requirement, ...]]:
        """``(scope, requirements)`` for ``image``: the most specific scope of the docker
        transport that the policy names, else the transport's default, else the default.
        The scope is said as the policy spells it (``""`` and ``default`` named so)."""
        for scope in scopes(image):
            if scope in self.docker:
                return f'docker "{scope}"', self.docker[scope]
        if self.docker_default is not None:
            return 'docker ""', self.docker_default
        return "default", self.default


def scopes(image: Reference) -> list[str]:
    """The docker transport's scopes for ``image``, most specific first: the reference
    itself (``name:tag`` or ``name@digest``), the repository, each namespace above it,
    the registry ``host[:port]``, then ``*.``-wildcards of the host (without its port)
    from the longest to the top-level domain."""
    out = [str(image)]
    name = image.name
    while True:
        out.append(name)
        slash = name.rfind("/")
        if slash < 0:
            break
        name = name[:slash]
    host = image.registry
    if not host.startswith("["):
        host = host.partition(":")[0]
        labels = host.split(".")
        out += ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
    return out


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: a JSON object expected, got {json.dumps(value)[:40]}")
    return value


def _only(obj: dict[str, object], allowed: set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise PolicyError(f'{where}: unknown key "{key}"')


def _str(obj: dict[str, object], key: str, where: str) -> str:
    if key not in obj:
        raise PolicyError(f'{where}: key "{key}" missing')
    value = obj[key]
    if not isinstance(value, str):
        raise PolicyError(f'{where}: "{key}" must be a string')
    return value


def _reference(text: str, where: str, *, tagged: bool) -> Reference:
    try:
        ref = parse_reference(text, default_tag=None)
    except InvalidReference as exc:
        raise PolicyError(f"{where}: {exc}") from None
    if tagged and ref.tag is None and ref.digest is None:
        raise PolicyError(f"{where}: {text} contains neither a tag nor digest")
    return ref


def _prefix(text: str, where: str) -> str:
    """A remapIdentity prefix, as containers/image admits it: a registry ``host[:port]``,
    or a repository name without tag or digest in any spelling it parses (``team/app``
    is kept as written: the prefix is compared with the image's normalized name as
    given, so a spelling that is not normalized never matches)."""
    try:
        ref = parse_reference(text if "/" in text else f"{text}/x", default_tag=None)
    except InvalidReference:
        raise PolicyError(f'{where}: prefix "{text}" is not valid') from None
    if ref.tag is not None or ref.digest is not None:
        raise PolicyError(f'{where}: prefix "{text}" is not valid')
    return text


def _identity(value: object, where: str) -> IdentityRule:
    where = f"{where}, signedIdentity"
    obj = _object(value, where)
    kind = obj.get("type")
    simple: dict[object, Callable[[], IdentityRule]] = {
        "matchExact": MatchExact,
        "matchRepoDigestOrExact": MatchRepoDigestOrExact,
        "matchRepository": MatchRepository,
    }
    if kind in simple:
        _only(obj, {"type"}, where)
        return simple[kind]()
    if kind == "exactReference":
        _only(obj, {"type", "dockerReference"}, where)
        text = _str(obj, "dockerReference", where)
        return ExactReference(_reference(text, where, tagged=True))
    if kind == "exactRepository":
        _only(obj, {"type", "dockerRepository"}, where)
        text = _str(obj, "dockerRepository", where)
        return ExactRepository(_reference(text, where, tagged=False).name)
    if kind == "remapIdentity":
        _only(obj, {"type", "prefix", "signedPrefix"}, where)
        prefix = _prefix(_str(obj, "prefix", where), where)
        signed = _prefix(_str(obj, "signedPrefix", where), where)
        return RemapIdentity(prefix, signed)
    raise PolicyError(f'{where}: unknown policy reference match type "{kind}"')


def _keys(obj: dict[str, object], where: str, *, many: bool) -> KeySource:
    names = ("keyPath", "keyPaths", "keyData") if many else ("keyPath", "keyData")
    present = [name for name in names if name in obj]
    if len(present) != 1:
        how = "none of them present" if not present else "more than one present"
        raise PolicyError(f"{where}: exactly one of {', '.join(names)} must be given, {how}")
    name = present[0]
    value = obj[name]
    if name == "keyPath":
        if not isinstance(value, str) or not value:
            raise PolicyError(f"{where}: keyPath must be a non-empty string")
        return KeySource(paths=(Path(value),))
    if name == "keyPaths":
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise PolicyError(f"{where}: keyPaths must be a list of paths")
        return KeySource(paths=tuple(Path(p) for p in value))
    if not isinstance(value, str):
        raise PolicyError(f"{where}: keyData must be a base64 string")
    try:
        return KeySource(data=base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        raise PolicyError(f"{where}: keyData is not base64") from None


_KEY_TYPES = {"GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs"}


def _requirement(value: object, where: str) -> Requirement:
    obj = _object(value, where)
    kind = obj.get("type")
    if kind == "insecureAcceptAnything":
        _only(obj, {"type"}, where)
        return AcceptAnything()
    if kind == "reject":
        _only(obj, {"type"}, where)
        return Reject()
    identity: IdentityRule = MatchRepoDigestOrExact()
    if kind == "signedBy":
        _only(obj, {"type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"}, where)
        key_type = obj.get("keyType")
        if key_type not in _KEY_TYPES:
            raise PolicyError(f"{where}: keyType must be GPGKeys, not {json.dumps(key_type)}")
        keys = _keys(obj, where, many=True)
        if "signedIdentity" in obj:
            identity = _identity(obj["signedIdentity"], where)
        return SignedBy(str(key_type), keys, identity)
    if kind == "sigstoreSigned":
        _only(obj, {"type", "keyPath", "keyData", "signedIdentity"}, where)
        keys = _keys(obj, where, many=False)
        if "signedIdentity" in obj:
            identity = _identity(obj["signedIdentity"], where)
        return SigstoreSigned(keys, identity)
    if kind == "signedBaseLayer":
        _only(obj, {"type", "baseLayerIdentity"}, where)
        if "baseLayerIdentity" not in obj:
            raise PolicyError(f'{where}: key "baseLayerIdentity" missing')
        _identity(obj["baseLayerIdentity"], where)
        return SignedBaseLayer()
    raise PolicyError(f'{where}: unknown policy requirement type "{kind}"')


def _requirements(value: object, where: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where}: a non-empty list of requirements expected")
    return tuple(_requirement(item, f"{where}[{i}]") for i, item in enumerate(value))


def parse_policy(data: bytes, source: str = "policy") -> Policy:
    """The policy in ``data``; PolicyError (one line, naming ``source``) when invalid."""
    try:
        top = _object(strictjson.loads(data, PolicyError), "the policy")
        _only(top, {"default", "transports"}, "the policy")
        if "default" not in top:
            raise PolicyError("default policy is missing")
        default = _requirements(top["default"], "default")
        docker: dict[str, tuple[Requirement, ...]] = {}
        docker_default = None
        if "transports" in top:
            transports = _object(top["transports"], "transports")
            for name, section in transports.items():
                scoped = _object(section, f"transports.{name}")
                for scope, value in scoped.items():
                    reqs = _requirements(value, f'transports.{name}["{scope}"]')
                    if name != "docker":
                        continue
                    if scope == "":
                        docker_default = reqs
                    else:
                        docker[scope] = reqs
    except PolicyError as exc:
        raise PolicyError(f"invalid policy in {source}: {exc}") from None
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Policy(default, docker, docker_default, digest, source)


def load_policy(path: Path) -> Policy:
    """The policy file at ``path``."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_POLICY + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read the policy {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_POLICY:
        raise PolicyError(f"invalid policy in {path}: larger than 1 MiB")
    return parse_policy(data, str(path))
