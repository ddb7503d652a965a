"""Platforms against real registries: `tailor copy --platform` takes the entry containerd
would take (skopeo, the independent client, agrees where containers/image matches the same
way), and `tailor stage` refuses what the cells could not run before anything is published."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from tests.support.cli import Run, insecure
from tests.support.images import Layout, artifact, image, index, push_raw
from tests.support.proxy import Proxy
from tests.support.registry import Registry
from tests.support.skopeo import Skopeo

# Docker Hub's order (library/busybox): arm/v5 comes before arm/v7.
HUB = [
    ("linux", "amd64", "", ""),
    ("linux", "arm", "v5", ""),
    ("linux", "arm", "v7", ""),
    ("linux", "arm64", "v8", ""),
    ("linux", "386", "", ""),
    ("linux", "ppc64le", "", ""),
    ("linux", "s390x", "", ""),
    ("windows", "amd64", "", "10.0.17763.5458"),
]
COSIGN_SIG = "application/vnd.dev.cosign.simplesigning.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Images:
    layout: Layout
    children: dict[str, dict]  # "os/arch[/variant]" -> its descriptor in the hub index
    configs: dict[str, str]  # config digest -> "os/arch[/variant]"


@pytest.fixture
def images(tmp_path: Path) -> Images:
    lay = Layout(tmp_path / "layout")
    children: dict[str, dict] = {}
    configs: dict[str, str] = {}
    for seed, (os_name, arch, variant, version) in enumerate(HUB, start=1):
        desc = image(
            lay,
            seed=seed,
            layers=1,
            layer_size=1024,
            os_name=os_name,
            arch=arch,
            variant=variant,
            os_version=version,
        )
        name = "/".join(x for x in (os_name, arch, variant) if x)
        children[name] = desc
        configs[json.loads(lay.blobs[desc["digest"]])["config"]["digest"]] = name
    lay.tag("hub", index(lay, list(children.values())))
    # arm64 without a variant, next to 386 listed before amd64
    arm64 = image(lay, seed=20, layers=1, layer_size=1024, arch="arm64")
    lay.tag("plain-arm64", index(lay, [children["linux/386"], arm64, children["linux/amd64"]]))
    lay.tag("x86-only", index(lay, [children["linux/arm64/v8"], children["linux/386"]]))
    return Images(lay, children, configs)


def skopeo_choice(skopeo: Skopeo, ref: str, *override: str) -> str:
    """The config digest of the image skopeo picks from ``ref``'s index for the overrides."""
    config = skopeo.run("inspect", "--config", "--raw", "--tls-verify=false", *override, ref)
    return sha(config.encode())


def config_of(skopeo: Skopeo, ref: str) -> str:
    manifest = json.loads(skopeo.raw(ref))
    return str(manifest["config"]["digest"])


@pytest.mark.parametrize(
    ("request_", "expected", "override"),
    [
        ("linux/arm", "linux/arm/v7", ["--override-arch", "arm"]),
        ("linux/arm/v7", "linux/arm/v7", ["--override-arch", "arm", "--override-variant", "v7"]),
        ("linux/arm/v6", "linux/arm/v5", ["--override-arch", "arm", "--override-variant", "v6"]),
        ("linux/arm64/v8", "linux/arm64/v8", ["--override-arch", "arm64"]),
        ("linux/aarch64", "linux/arm64/v8", ["--override-arch", "arm64"]),
        ("linux/amd64", "linux/amd64", ["--override-arch", "amd64"]),
        ("windows/amd64", "windows/amd64", ["--override-os", "windows"]),
    ],
)
def test_copy_platform_takes_containerds_choice(
    public: Registry,
    internal: Registry,
    skopeo: Skopeo,
    tailor: Callable[..., Run],
    images: Images,
    request_: str,
    expected: str,
    override: list[str],
) -> None:
    skopeo.push(images.layout, "hub", f"{public.host}/lib/hub:1")
    src = f"docker://{public.host}/lib/hub:1"
    run = tailor(
        "copy",
        *insecure(public.host, internal.host),
        "--platform",
        request_,
        f"{public.host}/lib/hub:1",
        f"{internal.host}/one/hub:x",
    )
    assert run.returncode == 0, run.stderr
    want = images.children[expected]["digest"]
    assert run.stdout.strip() == f"{internal.host}/one/hub@{want}"
    copied = config_of(skopeo, f"{internal.host}/one/hub:x")
    assert images.configs[copied] == expected
    # skopeo (containers/image) picks the same entry from the same index.
    assert images.configs[skopeo_choice(skopeo, src, *override)] == expected


def test_arm64_v8_matches_an_entry_without_variant_and_amd64_falls_back_to_386(
    public: Registry, internal: Registry, skopeo: Skopeo, tailor: Callable[..., Run], images: Images
) -> None:
    skopeo.push(images.layout, "plain-arm64", f"{public.host}/lib/plain:1")
    skopeo.push(images.layout, "x86-only", f"{public.host}/lib/x86:1")
    entries = json.loads(skopeo.raw(f"{public.host}/lib/plain:1"))["manifests"]
    assert entries[1]["platform"] == {"os": "linux", "architecture": "arm64"}

    def copy(src: str, platform: str) -> Run:
        args = ["copy", *insecure(public.host, internal.host), "--platform", platform]
        return tailor(*args, f"{public.host}/{src}", f"{internal.host}/two/img:x")

    run = copy("lib/plain:1", "linux/arm64/v8")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith(f"@{entries[1]['digest']}")
    assert skopeo_choice(
        skopeo, f"docker://{public.host}/lib/plain:1", "--override-arch", "arm64"
    ) == config_of(skopeo, f"{internal.host}/two/img@{entries[1]['digest']}")
    # 386 is listed first, amd64 last: the best match wins, not the first.
    run = copy("lib/plain:1", "linux/amd64")
    assert run.stdout.strip().endswith(f"@{images.children['linux/amd64']['digest']}")
    # No amd64 at all: containerd's Only(linux/amd64) takes 386. containers/image does not
    # (skopeo refuses), which is why the difference is written down in docs/tailor.md.
    run = copy("lib/x86:1", "linux/amd64")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith(f"@{images.children['linux/386']['digest']}")
    with pytest.raises(AssertionError, match="no image found in image index for architecture"):
        skopeo_choice(skopeo, f"docker://{public.host}/lib/x86:1", "--override-arch", "amd64")
    # A platform the index lacks: one line naming what it has, exit 1.
    run = copy("lib/x86:1", "linux/riscv64")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "tailor: error: no image for platform linux/riscv64 in the index "
        "(it has: linux/arm64/v8, linux/386)"
    )


# -- staging refuses what the cells cannot run -------------------------------------------------


def _short(desc: dict) -> str:
    return str(desc["digest"])[:19]


def _unrunnable(lay: Layout, kind: str) -> tuple[dict, str]:
    """An image the cells (linux/amd64) cannot run, and the line `tailor stage` must say."""
    amd = {"platform": {"os": "linux", "architecture": "amd64"}}
    if kind == "arm64-only":
        arm64 = image(lay, seed=31, layers=1, layer_size=512, arch="arm64", variant="v8")
        return index(lay, [arm64]), (
            "the image has no manifest for linux/amd64, the platform the cells run "
            "(the index has: linux/arm64/v8)"
        )
    if kind == "windows-only":
        win = image(lay, seed=32, layers=1, layer_size=512, os_name="windows")
        win2 = image(lay, seed=33, layers=1, layer_size=512, os_name="windows", arch="arm64")
        win["platform"]["os.version"] = "10.0.20348.2227"
        return index(lay, [win, win2]), (
            "the image has no manifest for linux/amd64, the platform the cells run "
            "(the index has: windows(10.0.20348.2227)/amd64, windows/arm64)"
        )
    if kind == "single-arm64":
        single = image(lay, seed=34, layers=1, layer_size=512, arch="arm64", variant="v8")
        return single, (
            "the image is for linux/arm64/v8, not linux/amd64, the platform the cells run"
        )
    if kind == "signature":
        cfg = json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {}}).encode()
        sig = artifact(
            lay,
            config_type="application/vnd.oci.image.config.v1+json",
            config=cfg,
            layer_type=COSIGN_SIG,
            payload=b'{"critical":{"image":{}}}',
        )
        return sig, f"not a runnable image: layer 0 is {COSIGN_SIG}, not a filesystem layer"
    if kind == "chart":
        chart = artifact(
            lay,
            config_type=HELM_CONFIG,
            config=b'{"name":"app","version":"1.0.0"}',
            layer_type="application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            payload=b"chart",
        )
        return chart, f"not a runnable image: its config is {HELM_CONFIG}, not an image config"
    if kind == "sbom-for-amd64":
        sbom = artifact(
            lay,
            config_type="application/vnd.oci.empty.v1+json",
            config=b"{}",
            layer_type="application/spdx+json",
            payload=b'{"spdxVersion":"SPDX-2.3"}',
            artifact_type="application/spdx+json",
        )
        top = index(lay, [{**sbom, **amd}])
        return top, (
            "not a runnable image: an artifact of type application/spdx+json "
            f"(at index {_short(top)} -> manifest {_short(sbom)} (linux/amd64))"
        )
    assert kind == "nested", kind
    sbom = artifact(
        lay,
        config_type="application/vnd.oci.empty.v1+json",
        config=b"{}",
        layer_type="application/spdx+json",
        payload=b'{"spdxVersion":"SPDX-2.3"}',
    )
    inner = {**index(lay, [{**sbom, **amd}]), **amd}
    top = index(lay, [inner])
    return top, (
        "not a runnable image: its config is application/vnd.oci.empty.v1+json, not an image "
        f"config (at index {_short(top)} -> index {_short(inner)} (linux/amd64) -> "
        f"manifest {_short(sbom)} (linux/amd64))"
    )


def catalog(reg: Registry) -> list[str]:
    return list(requests.get(f"{reg.url}/v2/_catalog", timeout=5).json()["repositories"] or [])


def stage(
    tailor: Callable[..., Run], src: str, reg: Registry, dst: Registry, result: Path, *extra: str
) -> Run:
    return tailor(
        "stage",
        *insecure(reg.host, dst.host),
        *["--image", src, "--staging-guid", "stg-1", "--result-file", str(result)],
        *["--internal-registry", dst.host, *extra],
    )


@pytest.mark.parametrize(
    "kind",
    [
        "arm64-only",
        "windows-only",
        "single-arm64",
        "signature",
        "chart",
        "sbom-for-amd64",
        "nested",
    ],
)
def test_stage_refuses_what_the_cells_cannot_run(
    public: Registry,
    internal: Registry,
    skopeo: Skopeo,
    tailor: Callable[..., Run],
    tmp_path: Path,
    kind: str,
) -> None:
    lay = Layout(tmp_path / "unrunnable")
    top, line = _unrunnable(lay, kind)
    if kind == "nested":  # an index of indexes: skopeo 1.9 does not copy one
        push_raw(public.url, "lib/app", lay, top, "v1")
    else:
        lay.tag("v1", top)
        skopeo.push(lay, "v1", f"{public.host}/lib/app:v1")
    assert sha(skopeo.raw(f"{public.host}/lib/app:v1")) == top["digest"]
    result = tmp_path / "result.json"
    run = stage(tailor, f"{public.host}/lib/app:v1", public, internal, result)
    assert run.returncode == 1, run.stdout
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"tailor: error: {line}"]
    assert run.stdout == ""
    assert not result.exists()
    # Nothing was published: no repository, so no tag and no manifest.
    assert catalog(internal) == []
    missing = requests.get(f"{internal.url}/v2/staging/stg-1/manifests/{top['digest']}", timeout=5)
    assert missing.status_code == 404


def test_run_platform_stages_an_image_for_other_cells(
    public: Registry, internal: Registry, skopeo: Skopeo, tailor: Callable[..., Run], tmp_path: Path
) -> None:
    lay = Layout(tmp_path / "arm")
    arm = image(lay, seed=41, layers=1, layer_size=512, arch="arm64", config={"Cmd": ["/arm"]})
    amd = image(lay, seed=42, layers=1, layer_size=512, config={"Cmd": ["/amd"]})
    lay.tag("arm", index(lay, [arm]))
    lay.tag("both", index(lay, [amd, arm]))
    skopeo.push(lay, "arm", f"{public.host}/lib/arm:v1")
    skopeo.push(lay, "both", f"{public.host}/lib/both:v1")
    result = tmp_path / "result.json"
    # By option, then by TAILOR_RUN_PLATFORM: the arm64-only image stages for arm64 cells.
    arm_only = f"{public.host}/lib/arm:v1"
    run = stage(tailor, arm_only, public, internal, result, "--run-platform", "linux/arm64")
    assert run.returncode == 0, run.stderr
    assert json.loads(result.read_text())["process_types"] == {"web": "/arm"}
    assert catalog(internal) == ["staging/stg-1"]
    run = tailor(
        "stage",
        *insecure(public.host, internal.host),
        *["--image", f"{public.host}/lib/both:v1", "--staging-guid", "stg-2"],
        *["--result-file", str(result)],
        env={"TAILOR_RUN_PLATFORM": "linux/aarch64"},
    )
    assert run.returncode == 0, run.stderr
    # Not opted in: nothing copied; the web command is the arm64 image's, not the first entry's.
    assert json.loads(result.read_text())["process_types"] == {"web": "/arm"}
    bad = stage(tailor, arm_only, public, internal, result, "--run-platform", "arm64")
    assert bad.returncode == 2  # a usage error
    assert bad.stderr.strip().splitlines()[-1] == (
        "tailor: error: argument --run-platform: invalid platform 'arm64': expected"
        " os/arch[/variant] (see 'tailor stage -h')"
    )


def test_a_staging_fetches_the_image_it_checked_once(
    public: Registry, internal: Registry, images: Images, skopeo: Skopeo, tailor, tmp_path: Path
) -> None:
    """The staging checks the top manifest before anything is published and copies that
    very digest: the top manifest is fetched from the upstream once, not again by the copy
    (the review found two fetches)."""
    skopeo.push(images.layout, "hub", f"{public.host}/lib/hub:1")
    with Proxy(public.host) as front:
        run = tailor(
            "stage",
            *insecure(front.host, internal.host),
            *["--image", f"{front.host}/lib/hub:1", "--staging-guid", "stg-1"],
            *["--result-file", str(tmp_path / "r.json"), "--internal-registry", internal.host],
        )
    assert run.returncode == 0, run.stderr
    fetched = Counter(unquote(p) for m, p, _ in front.requests if m == "GET" and "/manifests/" in p)
    top = images.layout.tags["hub"]["digest"]
    assert fetched["/v2/lib/hub/manifests/1"] == 1, fetched
    assert fetched[f"/v2/lib/hub/manifests/{top}"] == 0, fetched
    # Each platform manifest once too: the check's and the plan's are one read.
    assert all(n == 1 for n in fetched.values()), fetched
