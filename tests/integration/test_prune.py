"""`broker prune` against a real registry secured by the broker, then real garbage collection."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.broker_api import minted_token
from tests.support.brokerproc import broker_cli
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.images import Layout, attach, image, referrer, referrers_tag
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


def test_prune_keeps_the_signatures_and_attestations_of_what_runs(
    secured: Secured, skopeo: Skopeo
) -> None:
    """A staged image's referrers (an SBOM, found at the upstream through the referrers
    tag, and the SBOM's signature) come with it into its staging repository; pruning
    around it while an LRP runs it keeps them, fetchable by the cells' role."""
    s = secured
    layout = Layout(s.tmp / "signed-layout")
    signed = image(layout, seed=72, layers=1, layer_size=64 * 1024)
    layout.tag("v1", signed)
    skopeo.push(layout, "v1", f"{s.upstream.host}/acme/signed:v1", all_platforms=False)
    sbom = referrer(
        layout,
        signed,
        artifact_type="application/spdx+json",
        layer_type="application/spdx+json",
        payload=b'{"spdxVersion":"SPDX-2.3"}',
    )
    sbom_sig = referrer(
        layout,
        sbom,
        artifact_type="application/vnd.cncf.notary.signature",
        layer_type="application/jose+json",
        payload=b'{"payload":"e30","signatures":[]}',
    )
    upstream, auth = f"http://{s.upstream.host}", (UPSTREAM_USER, UPSTREAM_PASSWORD)
    attach(upstream, "acme/signed", layout, sbom, signed["digest"], auth)
    attach(upstream, "acme/signed", layout, sbom_sig, sbom["digest"], auth)
    ran = push(s, f"{s.upstream.host}/acme/signed:v1", "app-1", "stg-signed")
    old = push(s, f"{s.upstream.host}/acme/signed:v1", "app-1", "stg-old")
    repo, digest = ran.split("/", 1)[1].split("@")
    old_repo = old.split("/", 1)[1].split("@")[0]

    applied = prune(s, lrps(ran), "--grace", "0s", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "a signature or attestation of an image kept" in applied.stdout
    for gone in (digest, referrers_tag(digest), sbom["digest"]):
        assert s.manifest("puller", old_repo, gone).status_code == 404, gone  # run by nobody
    index = s.manifest("puller", repo, referrers_tag(digest))
    assert index.status_code == 200
    assert [m["digest"] for m in index.json()["manifests"]] == [sbom["digest"]]
    assert s.manifest("puller", repo, referrers_tag(sbom["digest"])).status_code == 200
    for kept in (digest, sbom["digest"], sbom_sig["digest"]):
        assert s.manifest("puller", repo, kept).status_code == 200, kept


def backdate_closings(s: Secured, seconds: int) -> None:
    """Move every closed staging's creation and closing ``seconds`` into the past (as time
    passing would): the broker's SQLite store, written directly."""
    conn = sqlite3.connect(s.tmp / "broker.sqlite")
    try:
        with conn:
            conn.execute(
                "UPDATE stagings SET created_at = created_at - ?, closed_at = closed_at - ?"
                " WHERE closed_at IS NOT NULL",
                (seconds, seconds),
            )
    finally:
        conn.close()


def test_prune_marks_the_repositories_it_emptied_and_retention_forgets_only_those(
    secured: Secured,
) -> None:
    """A staging's row goes only once its repository is gone for good: prune deleted its
    images (or it never had any) at least SETTLED after it closed. A kept repository's
    staging stays, and so does its repository on the next prune."""
    s = secured
    gone = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-gone")
    kept = push(s, f"{s.upstream.host}/acme/web:v1", "app-2", "stg-kept")
    image_ref = f"{s.upstream.host}/acme/web:v1"
    minted_token(
        s.broker.url, s.clients["cc"], app_guid="app-3", staging_guid="stg-never", image=image_ref
    )
    cancelled = requests.delete(
        f"{s.broker.url}/v1/stagings/stg-never",
        headers=s.clients["cc"].headers(s.broker.url),
        timeout=30,
    )
    assert cancelled.status_code == 204, cancelled.text  # closed, and never pushed anything
    desired = lrps(kept)

    def marks() -> dict[str, bool]:
        rows = s.sql("SELECT staging_guid, repository_gone_at FROM stagings")
        return {guid: at is not None for guid, at in rows}

    # Just closed: a push token could still be valid, so prune deletes but marks nothing.
    applied = prune(s, desired, "--grace", "0s", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "3 manifest(s) deleted" in applied.stdout  # the index and its two platforms
    assert "marked" not in applied.stdout
    assert marks() == {"stg-gone": False, "stg-kept": False, "stg-never": False}
    repo, digest = gone.split("/", 1)[1].split("@")
    assert s.manifest("puller", repo, digest).status_code == 404

    # Three hours on: the emptied repository and the one never made are gone for good.
    backdate_closings(s, 3 * 3600)
    dry = prune(s, desired, "--grace", "0s")
    assert dry.returncode == 0, dry.stderr
    assert "2 closed staging(s) would be marked" in dry.stdout
    assert marks() == {"stg-gone": False, "stg-kept": False, "stg-never": False}
    applied = prune(s, desired, "--grace", "0s", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "0 manifest(s) deleted" in applied.stdout
    assert "2 closed staging(s) marked as having no repository left" in applied.stdout
    assert marks() == {"stg-gone": True, "stg-kept": False, "stg-never": True}

    # Retention: the default keeps them 30 days; an hour's retention forgets them now.
    report = broker_cli(s.env, "stagings", "retention")
    assert report.returncode == 0, report.stderr
    assert "3 closed staging(s) kept; 2 of them with their repository gone" in report.stdout
    assert "0 of those closed more than 30d ago" in report.stdout
    short = {**s.env, "BROKER_STAGING_RETENTION": "1h"}
    assert "2 of those closed more than 1h ago" in broker_cli(short, "stagings", "retention").stdout
    forgot = broker_cli(short, "stagings", "retention", "--apply")
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot 2 closed more than 1h ago" in forgot.stdout
    assert marks() == {"stg-kept": False}
    events = [(e, json.loads(d)) for e, c, r, d in s.audit_all() if e == "stagings.forgotten"]
    assert [(e, d["count"], d["retention_seconds"]) for e, d in events] == [
        ("stagings.forgotten", 2, 3600)
    ]
    assert broker_cli(s.env, "audit", "verify").returncode == 0

    # The next prune still judges the kept staging's repository, and deletes nothing.
    again = prune(s, desired, "--grace", "0s", "--apply")
    assert again.returncode == 0, again.stderr
    assert "0 manifest(s) deleted" in again.stdout
    kept_repo, kept_digest = kept.split("/", 1)[1].split("@")
    assert f"keep    {kept_repo}@{kept_digest}  (a desired LRP runs it" in again.stdout
    assert s.manifest("puller", kept_repo, kept_digest).status_code == 200


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
            "--registry-alias",  # pruned through the proxy: the LRPs name the registry
            s.internal_host,
            registry=proxy.host,
        )
    finally:
        proxy.stop()
    assert run.returncode == 1
    assert "nothing was deleted" in run.stderr
    repo, digest = first.split("/", 1)[1].split("@")
    assert s.manifest("puller", repo, digest).status_code == 200
    assert not [e for e, *_ in s.audit_all() if e == "prune.deleted"]


def test_a_running_image_survives_a_prune_through_another_spelling(
    secured: Secured, skopeo: Skopeo
) -> None:
    """Issue #11.4: staged through 127.0.0.1:PORT, an LRP runs that digest, and the operator
    prunes through localhost:PORT: the same registry, so the running image stays."""
    s = secured
    assert s.internal_host.startswith("127.0.0.1:")
    running = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-run")
    assert running.startswith(f"{s.internal_host}/staging/app-1/stg-run@sha256:")
    old = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-old")
    localhost = "localhost:" + s.internal_host.rsplit(":", 1)[1]

    applied = prune(s, lrps(running), "--grace", "0s", "--apply", registry=localhost)
    assert applied.returncode == 0, applied.stderr

    repo, digest = running.split("/", 1)[1].split("@")
    got = s.manifest("puller", repo, digest)  # what a cell pulls
    assert got.status_code == 200
    assert got.content == skopeo.raw(f"{s.upstream.host}/acme/web:v1")
    old_repo, old_digest = old.split("/", 1)[1].split("@")
    assert s.manifest("puller", old_repo, old_digest).status_code == 404  # nothing runs it
    assert f"keep    {repo}@{digest}  (a desired LRP runs it: {running})" in applied.stdout


def test_lrps_naming_the_registry_as_the_cells_do_need_an_alias(
    secured: Secured, skopeo: Skopeo
) -> None:
    """The cells pull through registry.internal:PORT, the operator prunes through
    127.0.0.1:PORT: no desired LRP image names the registry pruned, so --apply refuses and
    deletes nothing; named with --registry-alias, the running image stays."""
    s = secured
    running = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-run")
    old = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-old")
    port = s.internal_host.rsplit(":", 1)[1]
    as_cells = running.replace(s.internal_host, f"registry.internal:{port}", 1)
    repo, digest = running.split("/", 1)[1].split("@")
    old_repo, old_digest = old.split("/", 1)[1].split("@")

    refused = prune(s, lrps(as_cells), "--grace", "0s", "--apply")
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        f"broker: error: no desired LRP image names the registry pruned (localhost:{port}); "
        f"they name registry.internal:{port}: check --registry"
    )
    assert refused.stderr.rstrip().endswith("nothing was deleted")
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stdout == ""
    assert s.manifest("puller", repo, digest).status_code == 200
    assert s.manifest("puller", old_repo, old_digest).status_code == 200

    alias = f"registry.internal:{port}"
    applied = prune(s, lrps(as_cells), "--grace", "0s", "--apply", "--registry-alias", alias)
    assert applied.returncode == 0, applied.stderr
    assert applied.stderr == ""
    assert f"keep    {repo}@{digest}  (a desired LRP runs it: {as_cells})" in applied.stdout
    assert f"delete  {old_repo}@{old_digest}" in applied.stdout
    got = s.manifest("puller", repo, digest)
    assert got.status_code == 200
    assert got.content == skopeo.raw(f"{s.upstream.host}/acme/web:v1")
    assert s.manifest("puller", old_repo, old_digest).status_code == 404


def test_a_dry_run_shows_the_mismatch_and_allow_no_lrps_overrides_it(secured: Secured) -> None:
    s = secured
    old = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-old")
    old_repo, old_digest = old.split("/", 1)[1].split("@")
    port = s.internal_host.rsplit(":", 1)[1]
    elsewhere = "other.example:5000/staging/app-9/stg-9@sha256:" + "c" * 64
    desired = lrps(elsewhere, "not a reference")

    dry = prune(s, desired, "--grace", "0s")
    assert dry.returncode == 0, dry.stderr
    assert (
        f"ignore  {elsewhere}  (another registry: other.example:5000, not localhost:{port}; "
        "if it is the same, name it with --registry-alias)"
    ) in dry.stdout
    assert "ignore  not a reference  (not an image reference)" in dry.stdout
    assert f"would delete  {old_repo}@{old_digest}" in dry.stdout
    assert dry.stderr.startswith(
        f"broker: warning: no desired LRP image names the registry pruned (localhost:{port}); "
        "they name other.example:5000: check --registry"
    )
    assert dry.stderr.rstrip().endswith("--apply would refuse")
    assert s.manifest("puller", old_repo, old_digest).status_code == 200

    refused = prune(s, desired, "--grace", "0s", "--apply")
    assert refused.returncode == 1 and "nothing was deleted" in refused.stderr
    assert s.manifest("puller", old_repo, old_digest).status_code == 200
    assert not [e for e, *_ in s.audit_all() if e == "prune.deleted"]

    allowed = prune(s, desired, "--grace", "0s", "--apply", "--allow-no-lrps")
    assert allowed.returncode == 0, allowed.stderr
    assert "3 manifest(s) deleted" in allowed.stdout  # the index and its two platforms
    assert allowed.stderr.rstrip().endswith("went ahead (--allow-no-lrps)")
    assert s.manifest("puller", old_repo, old_digest).status_code == 404


def test_a_bad_registry_name_is_one_line_and_deletes_nothing(secured: Secured) -> None:
    s = secured
    old = push(s, f"{s.upstream.host}/acme/web:v1", "app-1", "stg-old")
    repo, digest = old.split("/", 1)[1].split("@")
    for args, registry in [
        ((), f"http://{s.internal_host}"),
        (("--registry-alias", "bad_host"), None),
        (("--registry-alias", "registry.internal:0"), None),
        (("--registry-alias", f"{s.internal_host}/staging"), None),
    ]:
        run = prune(s, lrps(old), "--grace", "0s", "--apply", *args, registry=registry)
        assert run.returncode == 1, (args, registry)
        assert run.stderr.startswith("broker: error: invalid registry '"), run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and run.stdout == ""
    assert s.manifest("puller", repo, digest).status_code == 200
