"""A real Distribution whose token auth is the broker (config from `broker registry-config`)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, Skopeo
from tests.support.brokerproc import BrokerProcess, broker_cli, broker_env, provision, start_broker
from tests.support.clients import Client, new_client
from tests.support.images import Layout, image, index
from tests.support.registry import Registry, free_port, start_registry, wait_http

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@dataclass
class Secured:
    tmp: Path
    broker: BrokerProcess
    env: dict[str, str]
    internal_host: str
    internal_proc: subprocess.Popen[bytes]
    upstream: Registry
    clients: dict[str, Client]
    keys: dict[str, Path]

    def token(self, who: str, *scopes: str, basic: bool = True) -> requests.Response:
        client = self.clients[who]
        assertion = client.assertion(self.broker.url)
        headers = (
            {
                "Authorization": "Basic "
                + base64.b64encode(f"{client.name}:{assertion}".encode()).decode()
            }
            if basic
            else {"Authorization": f"Bearer {assertion}"}
        )
        params = [("service", "internal-registry"), *[("scope", s) for s in scopes]]
        return requests.get(
            f"{self.broker.url}/v1/registry-token", params=params, headers=headers, timeout=10
        )

    def access(self, who: str, *scopes: str) -> list[dict]:
        answer = self.token(who, *scopes)
        assert answer.status_code == 200, answer.text
        claims = answer.json()["token"].split(".")[1]
        return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["access"]

    def manifest(self, who: str, repo: str, ref: str) -> requests.Response:
        token = self.token(who, f"repository:{repo}:pull").json()["token"]
        return requests.get(
            f"http://{self.internal_host}/v2/{repo}/manifests/{ref}",
            headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_TYPES},
            timeout=10,
        )

    def blob(self, who: str, repo: str, digest: str) -> bytes:
        token = self.token(who, f"repository:{repo}:pull").json()["token"]
        answer = requests.get(
            f"http://{self.internal_host}/v2/{repo}/blobs/{digest}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.status_code
        return answer.content

    def push(
        self, staging: str, app: str, *extra: str, image: str | None = None, public: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TAILOR_", "CF_"))}
        env.update(TAILOR_CACHE_DIR=str(self.tmp / "cache"), HOME=str(self.tmp / "home"))
        if not public:
            env["CF_DOCKER_PASSWORD"] = UPSTREAM_PASSWORD
        argv = [
            sys.executable,
            "-m",
            "tailor.cli",
            "push",
            "--docker-image",
            image or f"{self.upstream.host}/acme/web:v1",
            *([] if public else ["--docker-username", UPSTREAM_USER]),
            "--app-guid",
            app,
            "--staging-guid",
            staging,
            "--internal-registry",
            self.internal_host,
            "--insecure-registry",
            self.upstream.host,
            "--insecure-registry",
            self.internal_host,
            "--insecure-registry",
            self.broker.url.removeprefix("http://"),
            "--broker-url",
            self.broker.url,
            "--cc-client",
            "cloud-controller",
            "--cc-key",
            str(self.keys["cc"]),
            "--tailor-client",
            "tailor-1",
            "--tailor-key",
            str(self.keys["tailor"]),
            *extra,
        ]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def sql(self, query: str) -> list[tuple]:
        """Read the broker's SQLite store directly."""
        conn = sqlite3.connect(self.tmp / "broker.sqlite")
        try:
            return [tuple(r) for r in conn.execute(query)]
        finally:
            conn.close()

    def audit_all(self) -> list[tuple]:
        return self.sql("SELECT event, client, reason, detail FROM audit_events ORDER BY seq")

    def audit(self) -> list[tuple]:
        return self.sql(
            "SELECT event, client, reason, detail FROM audit_events"
            " WHERE event='registry.token' ORDER BY seq"
        )


@pytest.fixture
def secured(tmp_path: Path, skopeo: Skopeo) -> Iterator[Secured]:
    clients = {
        "cc": new_client("cloud-controller", "cc"),
        "tailor": new_client("tailor-1", "tailor", "p256"),
        "tailor2": new_client("tailor-2", "tailor"),
        "puller": new_client("cell-1", "puller", "p256"),
    }
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    paths = provision(env, tmp_path, clients.values())
    keys = {role: paths[c.name] for role, c in clients.items()}
    broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
    env["BROKER_PUBLIC_URL"] = broker.url
    port = free_port()
    config = broker_cli(
        env,
        "registry-config",
        "--addr",
        f"127.0.0.1:{port}",
        "--storage",
        "filesystem",
        "--root",
        str(tmp_path / "internal-store"),
    )
    assert config.returncode == 0, config.stderr
    (tmp_path / "internal.yml").write_text(config.stdout)
    registry_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    log = (tmp_path / "internal.log").open("wb")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "internal.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=registry_env,
    )
    wait_http(f"http://127.0.0.1:{port}/v2/", proc=proc)
    upstream = start_registry(tmp_path / "upstream", htpasswd=(UPSTREAM_USER, UPSTREAM_PASSWORD))
    layout = Layout(tmp_path / "layout")
    layout.tag("v1", index(layout, [image(layout, seed=31), image(layout, seed=32, arch="arm64")]))
    skopeo.login(upstream)
    skopeo.push(layout, "v1", f"{upstream.host}/acme/web:v1")
    sec = Secured(tmp_path, broker, env, f"127.0.0.1:{port}", proc, upstream, clients, keys)
    yield sec
    # The test may have restarted the registry (prune + GC): stop the one running now.
    sec.internal_proc.terminate()
    sec.internal_proc.wait(10)
    broker.stop()
    upstream.stop()


def test_config_is_what_distribution_runs(secured: Secured) -> None:
    config = json.loads((secured.tmp / "internal.yml").read_text())
    assert config["auth"]["token"]["realm"] == f"{secured.broker.url}/v1/registry-token"
    assert config["storage"]["delete"] == {"enabled": True}
    assert len(config["http"]["secret"]) >= 32
    anonymous = requests.get(f"http://{secured.internal_host}/v2/", timeout=5)
    assert anonymous.status_code == 401
    assert "registry-token" in anonymous.headers["WWW-Authenticate"]


def test_stage_into_the_secured_registry_with_broker_tokens(
    secured: Secured, skopeo: Skopeo
) -> None:
    s = secured
    run = s.push("stg-1", "app-1")
    assert run.returncode == 0, run.stderr
    ref = run.stdout.strip().splitlines()[-1]
    assert ref.startswith(f"{s.internal_host}/staging/app-1/stg-1@sha256:")
    digest = ref.split("@")[1]
    upstream_raw = skopeo.raw(f"{s.upstream.host}/acme/web:v1")
    got = s.manifest("puller", "staging/app-1/stg-1", digest)
    assert got.status_code == 200
    assert (
        got.content == upstream_raw
        and "sha256:" + hashlib.sha256(got.content).hexdigest() == digest
    )
    # Without a token nothing is readable.
    plain = requests.get(
        f"http://{s.internal_host}/v2/staging/app-1/stg-1/manifests/{digest}", timeout=5
    )
    assert plain.status_code == 401

    # The same app again: the tailor may pull (mount) from app-1's earlier staging.
    again = s.push("stg-2", "app-1", "--mount-from", "staging/app-1/stg-1")
    assert again.returncode == 0, again.stderr
    assert "mounted" in again.stderr and " copied sha256" not in again.stderr
    grants = [json.loads(d) for e, c, r, d in s.audit() if c == "tailor-1"]
    assert any("repository:staging/app-1/stg-1:pull" in g["granted"] for g in grants)


def test_a_public_image_is_staged_into_the_secured_registry(
    secured: Secured, skopeo: Skopeo
) -> None:
    s = secured
    public = start_registry(s.tmp / "public")  # anonymous pulls, like Docker Hub
    try:
        layout = Layout(s.tmp / "public-layout")
        layout.tag("v1", image(layout, seed=41))
        skopeo.push(layout, "v1", f"{public.host}/library/hello:v1")
        ref = f"{public.host}/library/hello:v1"
        run = s.push("stg-pub", "app-9", "--insecure-registry", public.host, image=ref,
                     public=True)  # fmt: skip
        assert run.returncode == 0, run.stderr
        staged = run.stdout.strip().splitlines()[-1]
        assert staged.startswith(f"{s.internal_host}/staging/app-9/stg-pub@sha256:")
        got = s.manifest("puller", "staging/app-9/stg-pub", staged.split("@")[1])
        assert got.status_code == 200 and got.content == skopeo.raw(ref)
        events = [(e, c, r) for e, c, r, _ in s.audit_all()]
        assert ("token.issued", "cloud-controller", None) in events
        assert ("token.redeemed", "tailor-1", None) in events
        assert ("staging.completed", "tailor-1", None) in events
        users = s.sql(
            "SELECT DISTINCT registry_username FROM audit_events WHERE staging_guid='stg-pub'"
        )
        assert users == [(None,)]  # no credentials were given, none recorded
    finally:
        public.stop()


def test_the_isolation_policy(secured: Secured) -> None:
    s = secured
    cc = s.clients["cc"]
    minted = requests.post(
        f"{s.broker.url}/v1/staging-tokens",
        headers=cc.headers(s.broker.url),
        json={
            "app_guid": "app-7",
            "staging_guid": "stg-7",
            "image": "registry.example.com/x:1",
            "username": "u",
            "password": "p",
            "tailor": "tailor-1",
        },
        timeout=10,
    )
    assert minted.status_code == 201
    own = "repository:staging/app-7/stg-7:pull,push"
    assert s.access("tailor", own) == [
        {"type": "repository", "name": "staging/app-7/stg-7", "actions": ["pull", "push"]}
    ]
    # Another tailor holds no staging there; nobody gets delete or the catalog.
    assert s.access("tailor2", own) == []
    assert s.access("tailor", "repository:staging/app-7/stg-7:delete,pull") == [
        {"type": "repository", "name": "staging/app-7/stg-7", "actions": ["pull"]}
    ]
    assert s.access("tailor", "registry:catalog:*") == []
    # Other apps' repositories stay closed to this tailor; the cells may only pull.
    assert s.access("tailor", "repository:staging/app-8/stg-1:pull") == []
    assert s.access("puller", own) == [
        {"type": "repository", "name": "staging/app-7/stg-7", "actions": ["pull"]}
    ]
    assert s.access("puller", "repository:other/thing:pull") == []
    # A cc client may not ask at all; a Basic user that is not the assertion's issuer fails.
    assert s.token("cc", own).status_code == 403
    forged = requests.get(
        f"{s.broker.url}/v1/registry-token",
        params={"service": "internal-registry", "scope": own},
        headers={
            "Authorization": "Basic "
            + base64.b64encode(
                f"tailor-1:{s.clients['tailor2'].assertion(s.broker.url)}".encode()
            ).decode()
        },
        timeout=10,
    )
    assert forged.status_code == 401
    assert s.token("tailor", own, basic=False).status_code == 200
    wrong_service = requests.get(
        f"{s.broker.url}/v1/registry-token",
        params={"service": "elsewhere", "scope": own},
        headers=s.clients["tailor"].headers(s.broker.url),
        timeout=10,
    )
    assert wrong_service.status_code == 422
    # Once the staging is closed, its tailor loses push.
    requests.delete(
        f"{s.broker.url}/v1/stagings/stg-7", headers=cc.headers(s.broker.url), timeout=10
    )
    assert s.access("tailor", own) == []
    refusals = [r for e, c, r, d in s.audit() if r == "refused"]
    assert len(refusals) >= 5


def test_tailor_copy_needs_no_flag_for_the_secured_registry(secured: Secured) -> None:
    s = secured
    cc = s.clients["cc"]
    minted = requests.post(
        f"{s.broker.url}/v1/staging-tokens",
        headers=cc.headers(s.broker.url),
        json={
            "app_guid": "app-9",
            "staging_guid": "stg-9",
            "image": f"{s.upstream.host}/acme/web:v1",
            "username": "u",
            "password": "p",
            "tailor": "tailor-1",
        },
        timeout=10,
    )
    assert minted.status_code == 201
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(
        TAILOR_SRC_PASSWORD=UPSTREAM_PASSWORD,
        TAILOR_BROKER_URL=s.broker.url,
        TAILOR_CLIENT_ID="tailor-1",
        TAILOR_CLIENT_KEY=str(s.keys["tailor"]),
        TAILOR_CACHE_DIR=str(s.tmp / "cache2"),
    )

    def copy_to(destination: str) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "tailor.cli",
            "copy",
            "--src-username",
            UPSTREAM_USER,
            "--insecure-registry",
            s.upstream.host,
            "--insecure-registry",
            s.internal_host,
            "--insecure-registry",
            "127.0.0.1",
            f"{s.upstream.host}/acme/web:v1",
            f"{s.internal_host}/{destination}",
        ]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    run = copy_to("staging/app-9/stg-9:v1")
    assert run.returncode == 0, run.stderr
    # And into a repository it holds no staging for: denied by the registry.
    denied = copy_to("staging/app-9/other:v1")
    assert denied.returncode == 1
    assert denied.stderr.strip().splitlines()[-1].startswith("tailor: error: unauthorized")
