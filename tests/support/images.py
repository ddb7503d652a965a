"""Build small OCI image layouts on disk (no Docker engine here) for skopeo to push."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layout:
    """An OCI layout directory; ``tags`` maps a tag to its top descriptor."""

    path: Path
    tags: dict[str, dict] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self._write_index()

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        self.blobs[digest] = data
        return digest

    def add_blob_file(self, source: Path, digest: str) -> None:
        os.link(source, self.path / "blobs" / "sha256" / digest[7:])

    def descriptor(self, media_type: str, data: bytes, **extra: object) -> dict:
        return {"mediaType": media_type, "digest": self.add_blob(data), "size": len(data), **extra}

    def tag(self, name: str, descriptor: dict) -> None:
        annotated = dict(descriptor)
        annotated["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.tags[name] = annotated
        self._write_index()

    def _write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(self.tags.values())}
        (self.path / "index.json").write_text(json.dumps(index))


def layer(seed: int, size: int, name: str = "payload.bin") -> bytes:
    """A gzip'd tar with one file of ``size`` pseudo-random (incompressible) bytes."""
    payload = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def image(
    layout: Layout,
    *,
    seed: int,
    layers: int = 3,
    layer_size: int = 64 * 1024,
    os_name: str = "linux",
    arch: str = "amd64",
    variant: str = "",
    os_version: str = "",
    config: dict | None = None,
) -> dict:
    """Add an image manifest (and its blobs) to ``layout``; return its descriptor (its
    ``platform`` says what the config says: os, architecture, variant, os.version)."""
    layer_descs = []
    diff_ids = []
    for i in range(layers):
        data = layer(seed * 1000 + i, layer_size, name=f"layer{i}.bin")
        layer_descs.append(layout.descriptor(OCI_LAYER, data))
        diff_ids.append(sha256(gzip.decompress(data)))
    platform = {"os": os_name, "architecture": arch}
    if variant:
        platform["variant"] = variant
    if os_version:
        platform["os.version"] = os_version
    cfg = {
        **platform,
        "config": config or {"Cmd": ["/bin/app"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_desc = layout.descriptor(OCI_CONFIG, json.dumps(cfg).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
    }
    return layout.descriptor(OCI_MANIFEST, json.dumps(manifest).encode(), platform=platform)


def index(layout: Layout, children: list[dict]) -> dict:
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    return layout.descriptor(OCI_INDEX, json.dumps(body).encode())


def artifact(
    layout: Layout,
    *,
    config_type: str,
    config: bytes,
    layer_type: str,
    payload: bytes,
    artifact_type: str | None = None,
) -> dict:
    """An OCI manifest that is no runnable image (a signature, a chart, an SBOM): its config
    and one layer of the given media types; its descriptor has no platform."""
    manifest: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = layout.descriptor(config_type, config)
    manifest["layers"] = [layout.descriptor(layer_type, payload)]
    return layout.descriptor(OCI_MANIFEST, json.dumps(manifest).encode())


def push_raw(registry_url: str, repository: str, layout: Layout, top: dict, ref: str) -> None:
    """Push ``top`` and all below it with plain Distribution API calls to a registry without
    auth: for shapes skopeo does not copy (an index of indexes)."""
    body = json.loads(layout.blobs[top["digest"]])
    for child in body.get("manifests", []):
        push_raw(registry_url, repository, layout, child, child["digest"])
    base = f"{registry_url}/v2/{repository}"
    for blob in [body.get("config"), *body.get("layers", [])]:
        if blob is None:
            continue
        started = requests.post(f"{base}/blobs/uploads/", timeout=10)
        started.raise_for_status()
        location = urljoin(registry_url, started.headers["Location"])
        joiner = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{joiner}digest={blob['digest']}",
            data=layout.blobs[blob["digest"]],
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        done.raise_for_status()
    put = requests.put(
        f"{base}/manifests/{ref}",
        data=layout.blobs[top["digest"]],
        headers={"Content-Type": top["mediaType"]},
        timeout=10,
    )
    put.raise_for_status()
