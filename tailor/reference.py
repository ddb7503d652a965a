"""Image references, parsed and normalized the way Docker does.

``ubuntu`` -> ``docker.io/library/ubuntu:latest``; ``host:5000/team/app@sha256:...``
keeps its port and digest; a tag and a digest may both be given. Anything else is
refused with :class:`~tailor.errors.InvalidReference` naming what is wrong.
:func:`registry_identity` says which registry a host[:port] is, however it is spelled.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tailor.errors import InvalidReference

__all__ = [
    "DEFAULT_REGISTRY",
    "Reference",
    "parse_reference",
    "registry_identity",
    "valid_repository",
]

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
_LEGACY_HUB_NAMES = {"index.docker.io", "registry-1.docker.io"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

# From the distribution reference grammar.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HOST_LABEL = re.compile(r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: registry, repository and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def endpoint(self) -> str:
        """The host[:port] to contact: Docker Hub is served from registry-1.docker.io."""
        return DOCKER_HUB_ENDPOINT if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest`` (the tag is dropped)."""
        return Reference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def valid_repository(path: str) -> bool:
    """Whether ``path`` is a repository path: lower-case components joined by ``/``."""
    return all(_COMPONENT.fullmatch(component) for component in path.split("/"))


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        hostpart, _, port = host[1:].partition("]")
        if not _IPV6.fullmatch(f"[{hostpart}]"):
            return False
        return port == "" or (port.startswith(":") and port[1:].isdigit())
    hostpart, sep, port = host.partition(":")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in hostpart.split("."))


def _split_registry(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        # Docker treats an upper-case first component as a host, too.
        return first, rest
    return DEFAULT_REGISTRY, name


def parse_reference(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse and normalize ``text``; a bare name gets ``default_tag``."""
    if not isinstance(text, str) or not text:
        raise InvalidReference("empty image reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"invalid image reference {text!r}: contains white space")
    if "://" in text:
        raise InvalidReference(f"invalid image reference {text!r}: give HOST/REPO, not a URL")

    rest, digest = text, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(f"invalid image reference {text!r}: bad digest {digest!r}")
        algo, _, hexpart = digest.partition(":")
        if algo == "sha256" and not re.fullmatch(r"[a-f0-9]{64}", hexpart):
            raise InvalidReference(
                f"invalid image reference {text!r}: a sha256 digest has 64 lower-case hex digits"
            )

    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid image reference {text!r}: bad tag {tag!r}")

    if not rest:
        raise InvalidReference(f"invalid image reference {text!r}: no repository name")
    registry, path = _split_registry(rest)
    if not _valid_host(registry):
        raise InvalidReference(f"invalid image reference {text!r}: bad registry host {registry!r}")
    if registry in _LEGACY_HUB_NAMES:
        registry = DEFAULT_REGISTRY
    if not path:
        raise InvalidReference(f"invalid image reference {text!r}: no repository name")
    if path != path.lower():
        raise InvalidReference(
            f"invalid image reference {text!r}: repository name must be lower-case"
        )
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"invalid image reference {text!r}: bad path component {component!r}"
            )
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if len(registry) + 1 + len(path) > _MAX_NAME:
        raise InvalidReference(
            f"invalid image reference {text!r}: name longer than {_MAX_NAME} characters"
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def registry_identity(registry: str, *, insecure: bool = False) -> str:
    """Which registry ``registry`` (``host[:port]``) is, not how it is spelled: ``host:port``
    with the host lower-cased, ``localhost``, ``127.0.0.1`` and ``::1`` (bracketed or not)
    as ``localhost``, an IP address in its canonical form, Docker Hub's names as
    ``docker.io``, and the scheme's default port filled in: 80 when ``insecure`` (plain
    HTTP, as the ``--insecure-registry`` list decides), else 443. Refuses anything that is
    not a registry host with :class:`~tailor.errors.InvalidReference`.

    ``registry_identity("LocalHost:5000") == registry_identity("[::1]:5000")``.
    """
    if not isinstance(registry, str) or not registry.strip():
        raise InvalidReference("empty registry name")
    text = registry.strip()
    if "://" in text or "/" in text or any(c.isspace() for c in text):
        raise InvalidReference(f"invalid registry {registry!r}: give HOST[:PORT]")
    if not text.startswith("[") and text.count(":") > 1:
        # A bare IPv6 address (several colons, no brackets) has no port: "::1".
        try:
            host, port = str(ipaddress.IPv6Address(text)), None
        except ValueError:
            raise InvalidReference(f"invalid registry {registry!r}: bad host") from None
    else:
        if not _valid_host(text):
            raise InvalidReference(f"invalid registry {registry!r}: bad host")
        if text.startswith("["):
            inside, _, after = text[1:].partition("]")
            try:
                host = str(ipaddress.IPv6Address(inside))
            except ValueError:
                raise InvalidReference(f"invalid registry {registry!r}: bad host") from None
            port = after[1:] or None
        else:
            hostpart, _, port_text = text.partition(":")
            host, port = hostpart.lower(), port_text or None
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                pass
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidReference(f"invalid registry {registry!r}: bad port")
    if host in _LOOPBACK_NAMES:
        host = "localhost"
    elif host in _LEGACY_HUB_NAMES:
        host = DEFAULT_REGISTRY
    number = int(port) if port is not None else 80 if insecure else 443
    return f"[{host}]:{number}" if ":" in host else f"{host}:{number}"
