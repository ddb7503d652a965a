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


def hub_index(*platforms: dict[str, str]) -> tuple[bytes, list[str]]:
    """An index with one entry per platform (digests 1..n in order), as Docker Hub lists them."""
    digests = [f"sha256:{i:064x}" for i in range(1, len(platforms) + 1)]
    entries = [
        desc(d, mediaType=OCI_MANIFEST, platform=plat)
        for d, plat in zip(digests, platforms, strict=True)
    ]
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return raw, digests


def plat(os_name: str, arch: str, variant: str = "", **extra: str) -> dict[str, str]:
    out = {"os": os_name, "architecture": arch, **extra}
    return {**out, "variant": variant} if variant else out


# Docker Hub's official images list their platforms in this order (library/busybox, golang).
HUB = [
    plat("linux", "amd64"),
    plat("linux", "arm", "v5"),
    plat("linux", "arm", "v7"),
    plat("linux", "arm64", "v8"),
    plat("linux", "386"),
    plat("linux", "ppc64le"),
    plat("linux", "s390x"),
    plat("windows", "amd64", **{"os.version": "10.0.17763.5458"}),
    plat("windows", "amd64", **{"os.version": "10.0.20348.2227"}),
    plat("unknown", "unknown"),  # a buildx attestation manifest
]


@pytest.mark.parametrize(
    ("request_", "entry"),
    [
        ("linux/amd64", 1),
        ("linux/x86_64", 1),
        ("linux/arm", 3),  # arm/v7, as Docker and containerd pick; not the first arm (v5)
        ("linux/arm/v7", 3),
        ("linux/armhf", 3),
        ("linux/arm/v6", 2),  # v6 runs v5
        ("linux/armel", 2),
        ("linux/arm/v5", 2),
        ("linux/arm64", 4),
        ("linux/arm64/v8", 4),
        ("linux/aarch64", 4),
        ("linux/386", 5),
        ("linux/ppc64le", 6),
        ("linux/s390x", 7),
        ("windows/amd64", 8),  # both Windows builds match; the first of equals
    ],
)
def test_select_on_a_docker_hub_index(request_: str, entry: int) -> None:
    raw, digests = hub_index(*HUB)
    assert parse_manifest(raw, None).select(parse_platform(request_)).digest == digests[entry - 1]


@pytest.mark.parametrize(
    ("platforms", "request_", "entry"),
    [
        # linux/arm64/v8 asked, the index says arm64 without a variant (v8 is the default)
        ([plat("linux", "amd64"), plat("linux", "arm64")], "linux/arm64/v8", 2),
        ([plat("linux", "amd64"), plat("linux", "arm64", "v8")], "linux/arm64", 2),
        # best, not first: 386 is listed before amd64
        ([plat("linux", "386"), plat("linux", "amd64")], "linux/amd64", 2),
        # ...and taken for amd64 when there is no amd64 (containerd's Only)
        ([plat("linux", "arm64"), plat("linux", "386")], "linux/amd64", 2),
        # arm64 runs 32-bit arm when the index has no arm64
        ([plat("linux", "arm", "v6"), plat("linux", "arm", "v7")], "linux/arm64", 2),
        ([plat("linux", "amd64", "v3"), plat("linux", "amd64")], "linux/amd64/v2", 2),
        ([plat("linux", "arm", "v5"), plat("linux", "arm")], "linux/arm/v7", 2),
    ],
)
def test_select_takes_the_best_match(
    platforms: list[dict[str, str]], request_: str, entry: int
) -> None:
    raw, digests = hub_index(*platforms)
    assert parse_manifest(raw, None).select(parse_platform(request_)).digest == digests[entry - 1]


def test_select_without_a_match_names_what_the_index_has() -> None:
    raw, _ = hub_index(*HUB)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw, None).select(parse_platform("linux/riscv64"))
    assert str(caught.value) == (
        "no image for platform linux/riscv64 in the index (it has: linux/amd64, linux/arm/v5, "
        "linux/arm/v7, linux/arm64/v8, linux/386, linux/ppc64le, linux/s390x, "
        "windows(10.0.17763.5458)/amd64, windows(10.0.20348.2227)/amd64, unknown/unknown)"
    )
    arm_only, _ = hub_index(plat("linux", "arm", "v7"), plat("linux", "arm64", "v8"))
    with pytest.raises(ManifestError, match=r"it has: linux/arm/v7, linux/arm64/v8\)$"):
        parse_manifest(arm_only, None).select(parse_platform("linux/amd64"))


def test_manifest_without_config_and_artifact_type() -> None:
    no_config = json.dumps({"mediaType": OCI_MANIFEST, "layers": []}).encode()
    with pytest.raises(ManifestError, match=r"^manifest has no config$"):
        parse_manifest(no_config, None)
    artifact = json.dumps(
        {"mediaType": OCI_MANIFEST, "artifactType": "application/x.sbom", "config": desc(D1)}
        | {"layers": []}
    ).encode()
    assert parse_manifest(artifact, None).artifact_type == "application/x.sbom"
