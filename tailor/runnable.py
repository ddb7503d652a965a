"""What the cells would run of an image, and whether it is a runnable image at all.

From the top manifest down through indexes to the image manifest for the cells' platform
(the entry containerd would pick: :meth:`Manifest.select`), then: not an OCI artifact, an
image config, filesystem layers only (containerd's ``IsLayerType``), and a config whose
os/architecture the platform runs. Each refusal is one line naming what the image has and,
below the top, where it was found. Pure: manifests come through ``fetch``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tailor.errors import ManifestError
from tailor.manifest import IMAGE_CONFIG_TYPES, INDEX_TYPES, Manifest, platform_of
from tailor.platforms import Platform, only

__all__ = ["check_config", "check_manifest", "image_for"]

_MAX_DEPTH = 2
_DOCKER_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)


def _short(digest: str) -> str:
    return digest[:19]  # "sha256:" and 12 hex digits


def _at(path: list[str]) -> str:
    """`` (at index sha256:... -> manifest sha256:... (linux/amd64))`` below the top, else ''."""
    return f" (at {' -> '.join(path)})" if len(path) > 1 else ""


def _is_layer(media_type: str) -> bool:
    return media_type.startswith("application/vnd.oci.image.layer.") or (
        media_type.split("+")[0] in _DOCKER_LAYERS
    )


def image_for(
    top: Manifest, fetch: Callable[[str], Manifest], platform: Platform
) -> tuple[Manifest, list[str]]:
    """The image manifest for ``platform`` under ``top``, and the path to it (for messages)."""
    manifest = top
    path = [f"{'index' if top.is_index else 'manifest'} {_short(top.digest)}"]
    while manifest.is_index:
        if len(path) > _MAX_DEPTH:
            raise ManifestError(f"index nesting is too deep{_at(path)}")
        try:
            entry = manifest.select(platform)
        except ManifestError:
            raise ManifestError(
                f"the image has no manifest for {platform}, the platform the cells run "
                f"(the index has: {manifest.platforms()}){_at(path)}"
            ) from None
        kind = "index" if entry.media_type in INDEX_TYPES else "manifest"
        path.append(f"{kind} {_short(entry.digest)} ({entry.platform})")
        try:
            manifest = fetch(entry.digest)
        except ManifestError as exc:
            raise ManifestError(f"not a runnable image: {exc}{_at(path)}") from None
    return manifest, path


def check_manifest(image: Manifest, path: list[str]) -> None:
    """Refuse an artifact: ``artifactType``, a config that is no image config, a layer that is
    no filesystem layer (a signature's payload, a chart, an SBOM)."""
    if image.artifact_type:
        raise ManifestError(
            f"not a runnable image: an artifact of type {image.artifact_type}{_at(path)}"
        )
    if image.config is None:
        raise ManifestError(f"not a runnable image: the manifest has no config{_at(path)}")
    if image.config.media_type not in IMAGE_CONFIG_TYPES:
        raise ManifestError(
            f"not a runnable image: its config is {image.config.media_type or 'untyped'}, "
            f"not an image config{_at(path)}"
        )
    for i, layer in enumerate(image.layers):
        if not _is_layer(layer.media_type):
            raise ManifestError(
                f"not a runnable image: layer {i} is {layer.media_type or 'untyped'}, "
                f"not a filesystem layer{_at(path)}"
            )


def check_config(config: dict[str, Any], platform: Platform, path: list[str]) -> None:
    """The config must name a platform that ``platform`` runs (as containerd matches it)."""
    declared = platform_of(config)
    if declared is None or not declared.os or not declared.architecture:
        raise ManifestError(
            f"not a runnable image: its config names no os and architecture{_at(path)}"
        )
    if not only(platform).match(declared):
        raise ManifestError(
            f"the image is for {declared}, not {platform}, the platform the cells run{_at(path)}"
        )
