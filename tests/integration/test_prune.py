"""`broker prune` against a real registry secured by the broker, then real garbage collection."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.broker_api import minted_token
from tests.support.brokerproc import broker_cli
from tests.support.images import Layout, image
from tests.support.processes import stop
from tests.support.proxy import Proxy
from tests.support.registry import REGISTRY_BIN, run_registry
from tests.support.secured import Secured
from tests.support.skopeo import Skopeo


def push(s: Secured, image_ref: str, app: str, staging: str) -> str:
    run = s.push(staging, app, image=image_ref)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


def prune(
    s: Secured, lrps: object, *args: str, registry: str | None = None
) -> subprocess.CompletedProcess[str]:
    path = s.tmp / "lrps.json"
    path.write_text(lrps if isinstance(lrps, str) else json.dumps(lrps))
    host = registry or s.internal_host
    return broker_cli(
        s.env,
        "prune",
        "--registry",
        host,
        "--desired-lrps",
        str(path),
        "--insecure-registry",
        host,
        *args,
    )


def disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def lrps(*images: str, fresh: bool = True) -> dict:
    return {
        "domains": {"cf-apps": {"fresh": fresh}},
        "desired_lrps": [
            {"process_guid": f"p{i}", "domain": "cf-apps", "image": img}
            for i, img in enumerate(images)
        ],
    }


def test_prune_keeps_what_runs_and_gc_frees_the_rest(secured: Secured, skopeo: Skopeo) -> None:
    s = secured
    layout = Layout(s.tmp / "old-layout")
    layout.tag("v1", image(layout, seed=71, layers=2, layer_size=256 * 1024))
    skopeo.push(layout, "v1", f"{s.upstream.host}/acme/old:v1", all_platforms=False)
    old = push(s, f"{s.upstream.host}/acme/old:v1", "app-1", "stg-old")
    web = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-web")
    push(s, f"{s.upstream.host}/acme/web:v1", "app-2", "stg-other")
    image_ref = f"{s.upstream.host}/acme/old:v1"
    minted_token(
        s.broker.url, s.clients["cc"], app_guid="app-3", staging_guid="stg-open", image=image_ref
    )
    desired = lrps(web, f"{s.internal_host}/staging/app-2/stg-other:stg-other")

    young = prune(s, desired)
    assert young.returncode == 0, young.stderr
    assert "0 manifest(s) would be deleted" in young.stdout
    assert "younger than the grace period" in young.stdout

    dry = prune(s, desired, "--grace", "0s")
    assert dry.returncode == 0, dry.stderr
    old_repo, old_digest = old.split("/", 1)[1].split("@")
    assert f"would delete  {old_repo}@{old_digest}" in dry.stdout
    # Exactly the old image's own blobs (config and layers) would be freed.
    manifest = json.loads(skopeo.raw(f"{s.upstream.host}/acme/old:v1"))
    size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    assert f"1 manifest(s) would be deleted; {size / 1024:.1f} KiB of blobs" in dry.stdout
    assert s.manifest("puller", old_repo, old_digest).status_code == 200  # dry run: still there

    applied = prune(s, desired, "--grace", "0s", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "1 manifest(s) deleted" in applied.stdout
    assert s.manifest("puller", old_repo, old_digest).status_code == 404
    assert [e for e, c, r, d in s.audit_all() if e == "prune.deleted"] == ["prune.deleted"]

    # Garbage collection needs the registry stopped (or read-only): stop, collect, start.
    store = s.tmp / "internal-store"
    before = disk(store)
    stop(s.internal_proc)
    gc = subprocess.run(
        [REGISTRY_BIN, "garbage-collect", str(s.tmp / "internal.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr
    after = disk(store)
    assert after < before - 400 * 1024, (before, after)
    s.internal_proc = run_registry(
        s.tmp / "internal.yml", s.internal_host, s.tmp / "internal-2.log"
    )
    upstream_raw = skopeo.raw(f"{s.upstream.host}/acme/web:v1")
    for ref in (web, f"{s.internal_host}/staging/app-2/stg-other@" + web.split("@")[1]):
        repo, digest = ref.split("/", 1)[1].split("@")
        got = s.manifest("puller", repo, digest)
        assert got.status_code == 200 and got.content == upstream_raw
        # Every blob of every platform is still there and still what its digest says.
        for child in json.loads(got.content)["manifests"]:
            sub = s.manifest("puller", repo, child["digest"])
            assert sub.status_code == 200
            layers = json.loads(sub.content)
            for blob in [layers["config"], *layers["layers"]]:
                data = s.blob("puller", repo, blob["digest"])
                assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lrps("x/y@sha256:" + "a" * 64, fresh=False), "is not fresh"),
        ({"domains": {"cf-apps": {"fresh": True}}, "desired_lrps": []}, "refusing to prune"),
        ("{not json", "not JSON"),
        ({"domains": {}, "desired_lrps": [{"image": "x"}]}, "is not in the list"),
        (
            {"domains": {"cf-apps": {"fresh": True}}, "desired_lrps": [{"process_guid": "p"}]},
            "no image",
        ),
    ],
)
def test_prune_refuses_an_untrustworthy_list(secured: Secured, body: object, message: str) -> None:
    s = secured
    old = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-a")
    run = prune(s, body, "--grace", "0s", "--apply")
    assert run.returncode == 1
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    repo, digest = old.split("/", 1)[1].split("@")
    assert s.manifest("puller", repo, digest).status_code == 200


def test_a_registry_error_mid_walk_deletes_nothing(secured: Secured) -> None:
    s = secured
    first = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-1")
    push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-2")
    proxy = Proxy(s.internal_host)
    proxy.faults.fail_paths.add("/staging/app-1/stg-2/tags/list")
    try:
        run = prune(
            s,
            lrps(f"{s.internal_host}/nothing/else@sha256:" + "b" * 64),
            "--grace",
            "0s",
            "--apply",
            registry=proxy.host,
        )
    finally:
        proxy.stop()
    assert run.returncode == 1
    assert "nothing was deleted" in run.stderr
    repo, digest = first.split("/", 1)[1].split("@")
    assert s.manifest("puller", repo, digest).status_code == 200
    assert not [e for e, *_ in s.audit_all() if e == "prune.deleted"]
