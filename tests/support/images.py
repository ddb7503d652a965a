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


def push_raw(
    registry_url: str,
    repository: str,
    layout: Layout,
    top: dict,
    ref: str,
    auth: tuple[str, str] | None = None,
) -> None:
    """Push ``top`` and all below it with plain Distribution API calls to a registry without
    auth, or with Basic ``auth``: for shapes skopeo does not copy (an index of indexes, a
    manifest with a ``subject``)."""
    body = json.loads(layout.blobs[top["digest"]])
    for child in body.get("manifests", []):
        push_raw(registry_url, repository, layout, child, child["digest"], auth)
    base = f"{registry_url}/v2/{repository}"
    for blob in [body.get("config"), *body.get("layers", [])]:
        if blob is None:
            continue
        started = requests.post(f"{base}/blobs/uploads/", auth=auth, timeout=10)
        started.raise_for_status()
        location = urljoin(registry_url, started.headers["Location"])
        joiner = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{joiner}digest={blob['digest']}",
            data=layout.blobs[blob["digest"]],
            headers={"Content-Type": "application/octet-stream"},
            auth=auth,
            timeout=10,
        )
        done.raise_for_status()
    put = requests.put(
        f"{base}/manifests/{ref}",
        data=layout.blobs[top["digest"]],
        headers={"Content-Type": top["mediaType"]},
        auth=auth,
        timeout=10,
    )
    put.raise_for_status()


OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def referrer(
    layout: Layout,
    subject: dict,
    *,
    payload: bytes,
    layer_type: str,
    artifact_type: str | None = None,
    config_type: str = OCI_EMPTY,
    config: bytes = b"{}",
    annotations: dict[str, str] | None = None,
) -> dict:
    """An OCI 1.1 artifact whose ``subject`` is ``subject`` (a descriptor): one layer of
    ``payload``. Returns its descriptor as a referrers index lists it: ``artifactType`` (the
    config's media type when the manifest has none) and its annotations."""
    manifest: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = layout.descriptor(config_type, config)
    manifest["layers"] = [layout.descriptor(layer_type, payload)]
    manifest["subject"] = {k: subject[k] for k in ("mediaType", "digest", "size")}
    if annotations:
        manifest["annotations"] = annotations
    extra: dict = {"artifactType": artifact_type or config_type}
    if annotations:
        extra["annotations"] = annotations
    return layout.descriptor(OCI_MANIFEST, json.dumps(manifest).encode(), **extra)


def referrers_tag(digest: str) -> str:
    """The distribution spec's referrers tag schema: ``sha256:HEX`` -> ``sha256-HEX``."""
    return digest.replace(":", "-", 1)


def attach(
    registry_url: str,
    repository: str,
    layout: Layout,
    ref: dict,
    subject: str,
    auth: tuple[str, str] | None = None,
) -> None:
    """Push the referrer ``ref`` of ``subject`` by digest, then add it to the referrers tag
    index, as an OCI 1.1 client pushing to a registry without the Referrers API does (the
    registry sent no ``OCI-Subject``): fetch the index (404: an empty one), append, push."""
    push_raw(registry_url, repository, layout, ref, ref["digest"], auth)
    url = f"{registry_url}/v2/{repository}/manifests/{referrers_tag(subject)}"
    got = requests.get(url, headers={"Accept": OCI_INDEX}, auth=auth, timeout=10)
    if got.status_code == 404:
        index: dict = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    else:
        got.raise_for_status()
        index = got.json()
    index["manifests"].append(ref)
    put = requests.put(
        url,
        data=json.dumps(index).encode(),
        headers={"Content-Type": OCI_INDEX},
        auth=auth,
        timeout=10,
    )
    put.raise_for_status()
    assert "OCI-Subject" not in put.headers


def cosign_like(layout: Layout, subject: str, kind: str) -> dict:
    """A manifest as cosign pushes under ``sha256-HEX.sig`` (a simple-signing payload) or
    ``.att`` (a DSSE envelope): no ``subject``, found by its tag alone."""
    if kind == "sig":
        layer_type = "application/vnd.dev.cosign.simplesigning.v1+json"
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest": subject}}})
        annotations = {"dev.cosignproject.cosign/signature": "MEUCIQDfakesignature=="}
    else:
        layer_type = "application/vnd.dsse.envelope.v1+json"
        payload = json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": ""})
        annotations = {"predicateType": "https://slsa.dev/provenance/v1"}
    config = {"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.descriptor(OCI_CONFIG, json.dumps(config).encode()),
        "layers": [layout.descriptor(layer_type, payload.encode(), annotations=annotations)],
    }
    return layout.descriptor(OCI_MANIFEST, json.dumps(manifest).encode())
