from __future__ import annotations

import json

import pytest

from tailor.errors import ConfigError, ManifestError
from tailor.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
    digest_of,
    parse_manifest,
    parse_platform,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def desc(digest: str, size: int = 10, **extra: object) -> dict:
    return {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest,
        "size": size,
        **extra,
    }


def test_image_manifest_blobs_skip_foreign_layers() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": desc(D1),
            "layers": [
                desc(D2),
                desc(
                    D3,
                    mediaType="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                    urls=["https://example.invalid/l"],
                ),
            ],
        }
    ).encode()
    m = parse_manifest(raw, None)
    assert m.media_type == DOCKER_MANIFEST and not m.is_index
    assert [b.digest for b in m.blobs()] == [D1, D2]
    assert m.digest == digest_of(raw)


def test_index_and_platform_selection() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                desc(D1, mediaType=OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"}),
                desc(
                    D2,
                    mediaType=OCI_MANIFEST,
                    platform={"os": "linux", "architecture": "arm64", "variant": "v8"},
                ),
            ],
        }
    ).encode()
    m = parse_manifest(raw, None)
    assert m.is_index
    assert m.select(Platform("linux", "arm64")).digest == D2
    assert m.select(parse_platform("linux/arm64/v8")).digest == D2
    with pytest.raises(ManifestError, match="linux/amd64, linux/arm64/v8"):
        m.select(Platform("windows", "amd64"))


def test_media_type_from_content_type_header() -> None:
    raw = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert parse_manifest(raw, DOCKER_LIST + "; charset=utf-8").media_type == DOCKER_LIST


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[]", "not a JSON object"),
        (b"{", "not a JSON object"),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "schema 1"),
        (json.dumps({"mediaType": "text/plain"}).encode(), "unsupported manifest media type"),
        (json.dumps({"mediaType": OCI_MANIFEST, "config": desc(D1)}).encode(), "no 'layers'"),
        (
            json.dumps({"mediaType": OCI_MANIFEST, "config": desc("md5:x"), "layers": []}).encode(),
            "no valid sha256",
        ),
        (
            json.dumps(
                {"mediaType": OCI_MANIFEST, "config": desc(D1, size=-1), "layers": []}
            ).encode(),
            "no valid size",
        ),
        (json.dumps({"mediaType": OCI_INDEX, "manifests": [1]}).encode(), "not a descriptor"),
        (b" " * (4 * 1024 * 1024 + 1), "larger than 4 MiB"),
    ],
)
def test_bad_manifests(body: bytes, why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        parse_manifest(body, None)


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_bad_platforms(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_platform(text)
