"""The highly-available deployment: two brokers on one PostgreSQL, two registries on shared
storage, HAProxy in front of each; replicas killed mid-flight."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from tests.support.broker_api import STAGING_TOKENS, minted_token, registry_token
from tests.support.brokerproc import (
    BrokerProcess,
    broker_cli,
    broker_env,
    broker_registry,
    provision,
    start_broker,
)
from tests.support.cli import TAILOR, Run, broker_settings, insecure, tailor_cli, tailor_env
from tests.support.clients import Client, new_client
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.haproxy import Balancer, start_haproxy
from tests.support.images import Layout, image
from tests.support.processes import free_port, spawn, stop
from tests.support.registry import Registry, start_registry
from tests.support.skopeo import Skopeo

pytestmark = [pytest.mark.registry, pytest.mark.slow]

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Cluster:
    tmp: Path
    env: dict[str, str]
    brokers: list[BrokerProcess]
    registries: list[subprocess.Popen[bytes]]
    broker_lb: Balancer
    registry_lb: Balancer
    upstream: Registry
    clients: dict[str, Client]
    keys: dict[str, Path]
    pg_url: str

    @property
    def broker_url(self) -> str:
        return f"http://{self.broker_lb.host}"

    def mint(self, app: str, staging: str) -> str:
        return minted_token(
            self.broker_url,
            self.clients["cc"],
            app_guid=app,
            staging_guid=staging,
            image=f"{self.upstream.host}/acme/{app_image(app)}:v1",
            username=UPSTREAM_USER,
            password=UPSTREAM_PASSWORD,
        )

    def stage_args(self, app: str, staging: str) -> list[str]:
        return [
            "stage",
            "--image",
            f"{self.upstream.host}/acme/{app_image(app)}:v1",
            "--staging-guid",
            staging,
            "--result-file",
            str(self.tmp / f"{staging}.json"),
            "--internal-registry",
            self.registry_lb.host,
            *insecure(self.upstream.host, "127.0.0.1"),
        ]

    def stage_env(self, staging: str, token: str) -> dict[str, str]:
        """Each staging its own tailor cache: they run side by side."""
        settings = broker_settings(self.broker_url, "tailor-1", self.keys["tailor"], token)
        return tailor_env(self.tmp / "cache", cache=staging, **settings)

    def stage(self, app: str, staging: str, token: str) -> Run:
        return tailor_cli(*self.stage_args(app, staging), env=self.stage_env(staging, token))

    def pull(self, repo: str, ref: str) -> requests.Response:
        puller = self.clients["puller"]
        token = registry_token(self.broker_url, puller, f"repository:{repo}:pull")
        bearer = {"Authorization": f"Bearer {token.json()['token']}", "Accept": ACCEPT}
        return requests.get(
            f"http://{self.registry_lb.host}/v2/{repo}/{ref}", headers=bearer, timeout=60
        )


def app_image(app: str) -> str:
    return "big" if app == "big" else "web"


@pytest.fixture
def cluster(tmp_path: Path, pg_schema_url: str, skopeo: Skopeo) -> Iterator[Cluster]:
    clients = {
        "cc": new_client("cloud-controller", "cc"),
        "tailor": new_client("tailor-1", "tailor"),
        "puller": new_client("cell-1", "puller"),
        "auditor": new_client("auditor", "auditor"),
    }
    broker_lb_port = free_port()
    public = f"http://127.0.0.1:{broker_lb_port}"
    env = broker_env(tmp_path, pg_schema_url, public)
    env["BROKER_LOG_LEVEL"] = "WARNING"
    paths = provision(env, tmp_path, clients.values())
    keys = {role: paths[c.name] for role, c in clients.items()}
    brokers = [start_broker(env, tmp_path / f"broker-{i}.log") for i in range(2)]
    broker_lb = start_haproxy(
        tmp_path,
        "brokers",
        [b.url.removeprefix("http://") for b in brokers],
        "/readyz",
        "200",
        port=broker_lb_port,
    )
    # Two Distribution replicas: one storage folder, one http.secret.
    (tmp_path / "http-secret").write_text("shared-secret-for-both-replicas-0123456789")
    registries, addrs = [], []
    for i in range(2):
        proc, addr = broker_registry(
            env,
            tmp_path,
            f"registry-{i}",
            "--storage",
            "filesystem",
            "--root",
            str(tmp_path / "shared-store"),
            "--http-secret-file",
            str(tmp_path / "http-secret"),
        )
        registries.append(proc)
        addrs.append(addr)
    registry_lb = start_haproxy(tmp_path, "registries", addrs, "/v2/", "(200|401)")
    upstream = start_registry(tmp_path / "upstream", htpasswd=(UPSTREAM_USER, UPSTREAM_PASSWORD))
    layout = Layout(tmp_path / "layout")
    layout.tag("web", image(layout, seed=41, layers=2, layer_size=16 * 1024))
    skopeo.login(upstream)
    skopeo.push(layout, "web", f"{upstream.host}/acme/web:v1", all_platforms=False)
    yield Cluster(
        tmp_path,
        env,
        brokers,
        registries,
        broker_lb,
        registry_lb,
        upstream,
        clients,
        keys,
        pg_schema_url,
    )
    for lb in (broker_lb, registry_lb):
        lb.stop()
    for proc in registries:
        stop(proc)
    for b in brokers:
        b.stop()
    upstream.stop()


def push_big(c: Cluster, skopeo: Skopeo) -> None:
    """acme/big:v1 (six layers of 6 MiB) to the upstream: only the test that stages it
    pays for building and pushing it."""
    layout = Layout(c.tmp / "layout-big")
    layout.tag("big", image(layout, seed=42, layers=6, layer_size=6 * 1024 * 1024))
    skopeo.push(layout, "big", f"{c.upstream.host}/acme/big:v1", all_platforms=False)


def test_a_registry_replica_dies_mid_stage(cluster: Cluster, skopeo: Skopeo) -> None:
    c = cluster
    push_big(c, skopeo)
    token = c.mint("big", "stg-big")
    proc = spawn(
        [*TAILOR, *c.stage_args("big", "stg-big"), "--jobs", "2"],
        env=c.stage_env("stg-big", token),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first blob is done: the copy is under way
    assert "copied" in first or "mounted" in first or "present" in first, first
    c.registries[0].send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, first + err
    # The killed replica did serve part of this staging before it died.
    assert "staging/big/stg-big" in (c.tmp / "registry-0.log").read_text()
    ref = out.strip().splitlines()[-1]
    repo, digest = ref.split("/", 1)[1].split("@")
    assert repo == "staging/big/stg-big"
    upstream_raw = skopeo.raw(f"{c.upstream.host}/acme/big:v1")
    manifest = c.pull(repo, f"manifests/{digest}")
    assert manifest.status_code == 200 and manifest.content == upstream_raw
    for layer in json.loads(manifest.content)["layers"]:
        blob = c.pull(repo, f"blobs/{layer['digest']}")
        assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]


def test_a_broker_replica_dies_between_mint_and_redeem(cluster: Cluster) -> None:
    c = cluster
    token = c.mint("web", "stg-failover")
    c.brokers[0].proc.send_signal(signal.SIGKILL)
    c.brokers[0].proc.wait()
    time.sleep(1.0)  # the balancer's health check notices
    run = c.stage("web", "stg-failover", token)
    assert run.returncode == 0, run.stderr
    looked = requests.post(
        f"{c.broker_url}{STAGING_TOKENS}/lookup",
        headers=c.clients["cc"].headers(c.broker_url),
        json={"token": token},
        timeout=30,
    ).json()
    assert looked["state"] == "completed" and looked["redeemed"] is True


def test_a_hundred_stagings_ten_at_a_time(cluster: Cluster) -> None:
    c = cluster
    tokens = {f"stg-{n:03d}": c.mint(f"app-{n % 10}", f"stg-{n:03d}") for n in range(100)}

    def one(item: tuple[str, str]) -> int:
        staging, token = item
        app = f"app-{int(staging[4:]) % 10}"
        run = c.stage(app, staging, token)
        assert run.returncode == 0, (staging, run.stderr[-500:])
        return run.returncode

    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(one, tokens.items())) == [0] * 100
    with psycopg.connect(c.pg_url) as conn:
        counts: dict[str, int] = dict(
            conn.execute("SELECT event, count(*) FROM audit_events GROUP BY event").fetchall()
        )
        states: dict[str, int] = dict(
            conn.execute("SELECT state, count(*) FROM stagings GROUP BY state").fetchall()
        )
        sealed = conn.execute("SELECT count(*) FROM sealed_credentials").fetchone()
    assert counts["token.issued"] == counts["token.redeemed"] == 100
    assert counts.get("token.refused", 0) == 0
    assert states == {"completed": 100} and sealed == (0,)
    verified = broker_cli(c.env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout
    assert "events valid" in verified.stdout and "first problem" not in verified.stdout
