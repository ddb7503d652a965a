"""The operator's signature policy at staging, end to end: `broker serve` with
BROKER_STAGING_POLICY serves it at redemption, `tailor stage` checks the image before
anything is published, and the audit log says which policy decided and who signed what
was staged. The images are signed by skopeo itself (tests/support/signing.py)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tailor.assertion import load_client_key
from tailor.broker_client import BrokerClient
from tests.support.broker_api import staging_token_body
from tests.support.brokerproc import (
    BrokerProcess,
    broker_cli,
    broker_env,
    provision,
    settled,
    start_broker,
)
from tests.support.cli import Run, broker_settings, insecure, tailor_cli, tailor_env
from tests.support.clients import Client, new_client
from tests.support.images import Layout, image, index
from tests.support.registry import Registry, start_registry
from tests.support.signing import (
    GnuPG,
    Key,
    gnupg,
    lookaside_path,
    sign_copy,
    standalone_sign,
    write_registries_d,
)

pytestmark = [pytest.mark.registry, pytest.mark.slow]


@dataclass
class World:
    tmp: Path
    upstream: Registry
    internal: Registry
    broker: BrokerProcess
    env: dict[str, str]
    cc: Client
    tailor: Client
    cc_key: Path
    tailor_key: Path
    signer: Key
    sigs: Path
    registries_d: Path
    policy: Path

    def stage(self, name: str, staging_guid: str, *extra: str, internal: bool = True) -> Run:
        """Mint a token for ``upstream/acme/NAME:v1`` (a public image) and stage it."""
        ref = f"{self.upstream.host}/acme/{name}:v1"
        cc = BrokerClient(self.broker.url, load_client_key(self.cc.name, self.cc_key))
        body = staging_token_body(
            staging_guid=staging_guid, image=ref, username=None, password=None
        )
        token = cc.mint(**{**body, "tailor": self.tailor.name})["token"]
        env = tailor_env(self.tmp)
        env.update(broker_settings(self.broker.url, self.tailor.name, self.tailor_key, token))
        args = ["--image", ref, "--staging-guid", staging_guid, "--app-guid", "app-1"]
        args += ["--result-file", str(self.tmp / f"{staging_guid}.json")]
        args += ["--internal-registry", self.internal.host] if internal else []
        args += extra
        return tailor_cli(
            "stage", *insecure(self.upstream.host, self.internal.host), *args, env=env
        )

    def events(self, staging_guid: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        settled(f"sqlite:///{self.tmp / 'broker.sqlite'}")
        db = sqlite3.connect(self.tmp / "broker.sqlite")
        try:
            rows = db.execute(
                "SELECT event, reason, detail FROM audit_events WHERE staging_guid = ?"
                " ORDER BY seq",
                (staging_guid,),
            )
            return [(e, r, json.loads(d) if d else {}) for e, r, d in rows]
        finally:
            db.close()

    def tags(self, staging_guid: str) -> int:
        url = f"{self.internal.url}/v2/staging/app-1/{staging_guid}/tags/list"
        return requests.get(url, timeout=10).status_code


def _corpus(tmp: Path, gpg: GnuPG, signer: Key, upstream: Registry) -> tuple[Path, Path]:
    """``acme/signed:v1`` (signed), ``acme/unsigned:v1``, ``acme/half:v1`` (an index whose
    amd64 image is signed and whose arm64 one is not) on ``upstream``; returns the
    lookaside directory and the registries.d naming it."""
    sigs = tmp / "sigs"
    rd = write_registries_d(tmp / "registries.d", upstream.host, lookaside=f"file://{sigs}")
    layout = Layout(tmp / "layout")
    layout.tag("single", image(layout, seed=41, layers=2))
    amd = image(layout, seed=42, layers=2)
    arm = image(layout, seed=43, layers=2, arch="arm64")
    layout.tag("multi", index(layout, [amd, arm]))
    home = tmp / "skopeo-home"
    home.mkdir()
    host = upstream.host
    sign_copy(gpg, signer, f"oci:{layout.path}:single", f"{host}/acme/signed:v1", rd, home=home)
    sign_copy(gpg, None, f"oci:{layout.path}:single", f"{host}/acme/unsigned:v1", rd, home=home)
    sign_copy(
        gpg,
        None,
        f"oci:{layout.path}:multi",
        f"{host}/acme/half:v1",
        rd,
        home=home,
        all_platforms=True,
    )
    manifest = layout.blobs[amd["digest"]]
    out = lookaside_path(sigs, "acme/half", amd["digest"])
    standalone_sign(gpg, signer, manifest, f"{host}/acme/half:v1", out, home=home)
    return sigs, rd


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with gnupg() as gpg:
        signer = gpg.generate("release")
        upstream = start_registry(tmp_path / "upstream")
        internal = start_registry(tmp_path / "internal")
        sigs, rd = _corpus(tmp_path, gpg, signer, upstream)
        # The key beside the policy, named relatively: the broker reads it from there.
        (tmp_path / "policy" / "keys").mkdir(parents=True)
        (tmp_path / "policy" / "keys" / "release.gpg").write_bytes(gpg.export(signer))
        policy = tmp_path / "policy" / "policy.json"
        signed_by = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "keys/release.gpg"}
        policy.write_text(
            json.dumps(
                {
                    "default": [{"type": "reject"}],
                    "transports": {"docker": {upstream.host: [signed_by]}},
                }
            )
        )
        cc, tailor = new_client("cloud-controller", "cc"), new_client("tailor", "tailor", "p256")
        keys = tmp_path / "client-keys"
        keys.mkdir()
        env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
        env.update(BROKER_STAGING_POLICY=str(policy), BROKER_REGISTRIES_D=str(rd))
        key_files = provision(env, keys, (cc, tailor))
        broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
        try:
            yield World(
                tmp_path,
                upstream,
                internal,
                broker,
                env,
                cc,
                tailor,
                key_files[cc.name],
                key_files[tailor.name],
                signer,
                sigs,
                rd,
                policy,
            )
        finally:
            broker.stop()
            upstream.stop()
            internal.stop()


def test_a_signed_image_is_staged_and_the_log_says_who_signed_it(world: World) -> None:
    run = world.stage("signed", "stg-signed")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(f"{world.internal.host}/staging/app-1/stg-signed@")
    events = world.events("stg-signed")
    redeemed = [d for e, _, d in events if e == "token.redeemed"]
    completed = [d for e, _, d in events if e == "staging.completed"]
    assert len(redeemed) == 1 and len(completed) == 1
    digest = redeemed[0]["policy"]
    assert digest.startswith("sha256:")
    assert completed[0] == {"policy": digest, "signers": [world.signer.fingerprint]}
    assert world.tags("stg-signed") == 200


def test_an_unsigned_image_fails_its_staging_and_publishes_nothing(world: World) -> None:
    for name, guid, why in [
        ("unsigned", "stg-unsigned", "A signature was required, but no signature exists"),
        # The cells' platform (amd64) is signed; the index's arm64 image is not, and the
        # staging copies every platform.
        ("half", "stg-half", "A signature was required, but no signature exists"),
    ]:
        run = world.stage(name, guid)
        assert run.returncode == 1, run.stdout
        (line,) = run.stderr.strip().splitlines()[-1:]
        assert "refused by the signature policy" in line and why in line
        assert f'scope docker "{world.upstream.host}", requirement 1 (signedBy)' in line
        assert "Traceback" not in run.stderr
        assert world.tags(guid) == 404  # nothing published
        events = world.events(guid)
        (failed,) = [(r, d) for e, r, d in events if e == "staging.failed"]
        assert failed[0] == "policy"
        assert failed[1]["policy"].startswith("sha256:") and why in failed[1]["error"]
        assert [e for e, _, _ in events][-2:] == ["staging.failed", "credentials.purged"]


def test_the_broker_will_not_start_on_a_policy_it_cannot_use(world: World) -> None:
    world.policy.write_text('{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}')
    done = broker_cli(world.env, "serve", "--host", "127.0.0.1", "--port", "1")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "BROKER_STAGING_POLICY: invalid policy in" in line and "none of them present" in line


def test_a_copy_can_leave_out_the_platforms_the_policy_refuses(world: World) -> None:
    src = f"{world.upstream.host}/acme/half:v1"
    dst = f"{world.internal.host}/narrowed/half:v1"
    # The broker's policy names its key relatively (from the policy's folder); the
    # tailor's, read from its own working directory, names it absolutely.
    doc = json.loads(world.policy.read_text())
    (signed_by,) = doc["transports"]["docker"][world.upstream.host]
    signed_by["keyPath"] = str(world.policy.parent / signed_by["keyPath"])
    policy = world.tmp / "copy-policy.json"
    policy.write_text(json.dumps(doc))
    args = ["--policy", str(policy), "--registries.d", str(world.registries_d)]
    hosts = insecure(world.upstream.host, world.internal.host)
    env = tailor_env(world.tmp)
    whole = tailor_cli("copy", *hosts, *args, src, dst, env=env)
    assert whole.returncode == 1 and "refused by the signature policy" in whole.stderr
    run = tailor_cli("copy", *hosts, *args, "--only-accepted-platforms", src, dst, env=env)
    assert run.returncode == 0, run.stderr
    assert "left out linux/arm64 (sha256:" in run.stderr
    got = requests.get(
        f"{world.internal.url}/v2/narrowed/half/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        timeout=10,
    )
    entries = got.json()["manifests"]
    assert [e["platform"]["architecture"] for e in entries] == ["amd64"]


def test_a_narrowing_policy_never_leaves_out_the_cells_platform(world: World) -> None:
    """BROKER_STAGING_POLICY_NARROW: the index's refused arm64 image is left out of what
    is staged; a staging whose cells run arm64 is refused all the same; and without an
    internal registry (the cells pull upstream) only the cells' platform is checked."""
    env = {**world.env, "BROKER_STAGING_POLICY_NARROW": "true"}
    narrow = start_broker(env, world.tmp / "broker-narrow.log", self_audience=True)
    try:
        w = dataclasses.replace(world, broker=narrow)
        run = w.stage("half", "stg-narrow")
        assert run.returncode == 0, run.stderr
        got = requests.get(
            f"{w.internal.url}/v2/staging/app-1/stg-narrow/manifests/stg-narrow",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
            timeout=10,
        )
        assert [e["platform"]["architecture"] for e in got.json()["manifests"]] == ["amd64"]
        (completed,) = [d for e, _, d in w.events("stg-narrow") if e == "staging.completed"]
        assert completed["signers"] == [w.signer.fingerprint]

        arm = w.stage("half", "stg-arm", "--run-platform", "linux/arm64")
        assert arm.returncode == 1 and "refused by the signature policy" in arm.stderr
        assert w.tags("stg-arm") == 404

        upstream = w.stage("half", "stg-upstream", internal=False)
        assert upstream.returncode == 0, upstream.stderr
        assert upstream.stdout.strip().startswith(f"{w.upstream.host}/acme/half@sha256:")
        strict = world.stage("half", "stg-upstream-strict", internal=False)
        assert strict.returncode == 1 and "refused by the signature policy" in strict.stderr
    finally:
        narrow.stop()
