"""What the cells would run of an image, and the one-line refusals (pure: manifests by digest)."""

from __future__ import annotations

import json

import pytest

from tailor.errors import ManifestError
from tailor.manifest import OCI_INDEX, OCI_MANIFEST, Manifest, digest_of, parse_manifest
from tailor.platforms import Platform, parse_platform
from tailor.runnable import check_config, check_manifest, image_for

AMD64 = parse_platform("linux/amd64")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Store:
    """Manifests by digest, as a registry would serve them (raw bytes parsed on fetch)."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    def add(self, body: dict) -> dict:
        raw = json.dumps(body).encode()
        digest = digest_of(raw)
        self.raw[digest] = raw
        media_type = body.get("mediaType", OCI_MANIFEST)
        return {"mediaType": media_type, "digest": digest, "size": len(raw)}

    def fetch(self, digest: str) -> Manifest:
        return parse_manifest(self.raw[digest], None)


def blob(media_type: str, n: int) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{n:064x}", "size": 10}


def image(store: Store, config_type: str = OCI_CONFIG, layer_type: str = OCI_LAYER) -> dict:
    return store.add(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": blob(config_type, 1),
            "layers": [blob(OCI_LAYER, 2), blob(layer_type, 3)],
        }
    )


def index(store: Store, *entries: tuple[dict, dict]) -> dict:
    manifests = [{**d, "platform": plat} for d, plat in entries]
    return store.add({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


LINUX_AMD64 = {"os": "linux", "architecture": "amd64"}
LINUX_ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def test_descends_to_the_platforms_manifest() -> None:
    store = Store()
    amd, arm = image(store), image(store, layer_type="application/vnd.oci.image.layer.v1.tar")
    top = index(store, (arm, LINUX_ARM64), (amd, LINUX_AMD64))
    found, path = image_for(store.fetch(top["digest"]), store.fetch, AMD64)
    assert found.digest == amd["digest"]
    assert path == [f"index {top['digest'][:19]}", f"manifest {amd['digest'][:19]} (linux/amd64)"]
    single = store.fetch(amd["digest"])
    assert image_for(single, store.fetch, AMD64) == (single, [f"manifest {amd['digest'][:19]}"])


def test_an_index_without_the_platform_names_what_it_has() -> None:
    store = Store()
    windows = {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2227"}
    top = index(store, (image(store), LINUX_ARM64), (image(store), windows))
    with pytest.raises(ManifestError) as caught:
        image_for(store.fetch(top["digest"]), store.fetch, AMD64)
    assert str(caught.value) == (
        "the image has no manifest for linux/amd64, the platform the cells run "
        "(the index has: linux/arm64/v8, windows(10.0.20348.2227)/amd64)"
    )


def test_a_nested_index_says_at_which_level() -> None:
    store = Store()
    no_config = store.add({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})
    inner = index(store, (no_config, LINUX_AMD64))
    top = index(store, (inner, LINUX_AMD64))
    with pytest.raises(ManifestError) as caught:
        image_for(store.fetch(top["digest"]), store.fetch, AMD64)
    assert str(caught.value) == (
        f"not a runnable image: manifest has no config (at index {top['digest'][:19]} -> "
        f"index {inner['digest'][:19]} (linux/amd64) -> "
        f"manifest {no_config['digest'][:19]} (linux/amd64))"
    )
    # An inner index without the platform: the level is named too.
    inner_arm = index(store, (image(store), LINUX_ARM64))
    top = index(store, (inner_arm, LINUX_AMD64))
    with pytest.raises(ManifestError, match=r"\(the index has: linux/arm64/v8\) \(at index "):
        image_for(store.fetch(top["digest"]), store.fetch, AMD64)


def test_nesting_deeper_than_two_indexes_is_refused() -> None:
    store = Store()
    level = image(store)
    for _ in range(3):
        level = index(store, (level, LINUX_AMD64))
    with pytest.raises(ManifestError, match=r"^index nesting is too deep"):
        image_for(store.fetch(level["digest"]), store.fetch, AMD64)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            {"artifactType": "application/vnd.example.sbom", "config": blob(OCI_CONFIG, 1)},
            "an artifact of type application/vnd.example.sbom",
        ),
        (
            {"config": blob("application/vnd.cncf.helm.config.v1+json", 1)},
            "its config is application/vnd.cncf.helm.config.v1+json, not an image config",
        ),
        (
            {"config": blob("application/vnd.oci.empty.v1+json", 1)},
            "its config is application/vnd.oci.empty.v1+json, not an image config",
        ),
        (
            {
                "config": blob(OCI_CONFIG, 1),
                "layers": [blob("application/vnd.dev.cosign.simplesigning.v1+json", 2)],
            },
            "layer 0 is application/vnd.dev.cosign.simplesigning.v1+json, not a filesystem layer",
        ),
    ],
)
def test_artifacts_are_not_runnable(body: dict, why: str) -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []} | body)
    manifest = parse_manifest(raw.encode(), None)
    with pytest.raises(ManifestError) as caught:
        check_manifest(manifest, [f"manifest {manifest.digest[:19]}"])
    assert str(caught.value) == f"not a runnable image: {why}"


@pytest.mark.parametrize(
    "layer_type",
    [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ],
)
def test_image_layers_and_configs_pass(layer_type: str) -> None:
    for config_type in (OCI_CONFIG, "application/vnd.docker.container.image.v1+json"):
        store = Store()
        manifest = store.fetch(image(store, config_type, layer_type)["digest"])
        check_manifest(manifest, [])


@pytest.mark.parametrize(
    ("config", "platform", "why"),
    [
        (
            {"os": "linux", "architecture": "arm64", "variant": "v8"},
            AMD64,
            "the image is for linux/arm64/v8, not linux/amd64, the platform the cells run",
        ),
        (
            {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5458"},
            AMD64,
            "the image is for windows(10.0.17763.5458)/amd64, not linux/amd64, "
            "the platform the cells run",
        ),
        (
            {"os": "linux", "architecture": "amd64"},
            parse_platform("linux/arm64"),
            "the image is for linux/amd64, not linux/arm64, the platform the cells run",
        ),
        # a cosign signature's config
        ({"os": "", "architecture": "", "config": {}}, AMD64, "not a runnable image: its config"),
        ({"config": {"Cmd": ["/app"]}}, AMD64, "not a runnable image: its config names no os"),
    ],
)
def test_config_must_be_for_the_platform(config: dict, platform: Platform, why: str) -> None:
    with pytest.raises(ManifestError) as caught:
        check_config(config, platform, [])
    assert str(caught.value).startswith(why)


@pytest.mark.parametrize(
    ("config", "platform"),
    [
        ({"os": "linux", "architecture": "amd64"}, "linux/amd64"),
        ({"os": "linux", "architecture": "x86_64"}, "linux/amd64"),
        ({"os": "linux", "architecture": "386"}, "linux/amd64"),  # containerd's Only
        ({"os": "linux", "architecture": "arm64"}, "linux/arm64/v8"),
        ({"os": "linux", "architecture": "arm", "variant": "v6"}, "linux/arm/v7"),
    ],
)
def test_config_for_a_platform_it_runs_passes(config: dict, platform: str) -> None:
    check_config(config, parse_platform(platform), [])
