"""Manifests and indexes: media types, descriptors, and which blobs an image needs. Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tailor.errors import ManifestError
from tailor.platforms import Platform, best, only, parse_platform

__all__ = [
    "ACCEPT",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "IMAGE_CONFIG_TYPES",
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
    "platform_of",
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
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
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
    artifact_type: str = ""
    """OCI 1.1 ``artifactType``: set, the manifest says it is an artifact, not an image."""

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def blobs(self) -> list[Descriptor]:
        """Config first, then the layers that are ours to copy."""
        out = [self.config] if self.config else []
        return out + [d for d in self.layers if d.distributable]

    def platforms(self) -> str:
        """The platforms an index's entries declare, for a message: ``a, b`` or ``none``."""
        return ", ".join(str(c.platform) for c in self.children if c.platform) or "none"

    def select(self, platform: Platform) -> Descriptor:
        """The entry containerd would pick for ``platform``: the best match, the first of
        equals (see tailor.platforms); entries that declare no platform are never picked."""
        chosen = best(only(platform), [c.platform for c in self.children])
        if chosen is None:
            raise ManifestError(
                f"no image for platform {platform} in the index (it has: {self.platforms()})"
            )
        return self.children[chosen]


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
    platform = platform_of(value.get("platform"))
    urls = value.get("urls")
    url_tuple = tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else ()
    return Descriptor(media, digest, size, platform, url_tuple)


def platform_of(value: object) -> Platform | None:
    """An index entry's ``platform`` object, or an image config's top level (same fields)."""
    if not isinstance(value, dict) or not isinstance(value.get("os"), str):
        return None
    features = value.get("os.features")
    return Platform(
        str(value.get("os", "")),
        str(value.get("architecture", "")),
        str(value.get("variant") or ""),
        str(value.get("os.version") or ""),
        tuple(str(f) for f in features) if isinstance(features, list) else (),
    )


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
        if data.get("config") is None:
            raise ManifestError("manifest has no config")
        config = _descriptor(data.get("config"), "config")
        descs = tuple(_descriptor(d, f"layers[{i}]") for i, d in enumerate(layers))
        artifact = data.get("artifactType")
        return Manifest(
            media,
            raw,
            digest,
            config=config,
            layers=descs,
            artifact_type=artifact if isinstance(artifact, str) else "",
        )
    raise ManifestError(f"unsupported manifest media type {media!r}")
