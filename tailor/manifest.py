"""Manifests and indexes: media types, descriptors, and which blobs an image needs. Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tailor.errors import ConfigError, ManifestError

__all__ = [
    "ACCEPT",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "Platform",
    "digest_of",
    "parse_manifest",
    "parse_platform",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

# Layers whose licence forbids redistribution ("foreign" layers) are fetched by the
# runtime from their own URLs; like skopeo we do not copy them.
_NON_DISTRIBUTABLE = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
MAX_MANIFEST = 4 * 1024 * 1024  # Distribution's own limit is 4 MiB


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def matches(self, other: Platform) -> bool:
        return (
            self.os == other.os
            and self.architecture == other.architecture
            and (not self.variant or self.variant == other.variant)
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]``, e.g. ``linux/arm64/v8``."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ConfigError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    @property
    def distributable(self) -> bool:
        return self.media_type not in _NON_DISTRIBUTABLE and not self.urls


@dataclass(frozen=True)
class Manifest:
    """A manifest or an index, with its exact bytes (their digest is its identity)."""

    media_type: str
    raw: bytes
    digest: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = field(default=())

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def blobs(self) -> list[Descriptor]:
        """Config first, then the layers that are ours to copy."""
        out = [self.config] if self.config else []
        return out + [d for d in self.layers if d.distributable]

    def select(self, platform: Platform) -> Descriptor:
        for child in self.children:
            if child.platform and platform.matches(child.platform):
                return child
        have = ", ".join(str(c.platform) for c in self.children if c.platform) or "none"
        raise ManifestError(f"no image for platform {platform} in the index (it has: {have})")


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is not a descriptor object")
    digest, size, media = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ManifestError(f"{where} has no valid sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where} has no valid size")
    if not isinstance(media, str):
        raise ManifestError(f"{where} has an invalid mediaType")
    platform = None
    plat = value.get("platform")
    if isinstance(plat, dict) and isinstance(plat.get("os"), str):
        platform = Platform(
            str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", ""))
        )
    urls = value.get("urls")
    url_tuple = tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else ()
    return Descriptor(media, digest, size, platform, url_tuple)


def parse_manifest(raw: bytes, content_type: str | None) -> Manifest:
    """Read manifest bytes; the media type comes from the body, else the Content-Type."""
    if len(raw) > MAX_MANIFEST:
        raise ManifestError("manifest larger than 4 MiB")
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
    except ValueError:
        raise ManifestError("manifest is not a JSON object") from None
    header_type = (content_type or "").split(";")[0].strip()
    media = data.get("mediaType") or header_type
    if not media and "manifests" in data:
        media = OCI_INDEX
    elif not media and "config" in data:
        media = OCI_MANIFEST
    if media in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise ManifestError("Docker schema 1 manifests are not supported (deprecated format)")
    digest = digest_of(raw)
    if media in INDEX_TYPES:
        items = data.get("manifests")
        if not isinstance(items, list):
            raise ManifestError("index has no 'manifests' list")
        children = tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(items))
        return Manifest(media, raw, digest, children=children)
    if media in MANIFEST_TYPES:
        layers = data.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest has no 'layers' list")
        config = _descriptor(data.get("config"), "config")
        descs = tuple(_descriptor(d, f"layers[{i}]") for i, d in enumerate(layers))
        return Manifest(media, raw, digest, config=config, layers=descs)
    raise ManifestError(f"unsupported manifest media type {media!r}")
