"""Two Distribution replicas on an S3-compatible store (moto's server) behind HAProxy,
secured by the broker: a staging goes in, and comes back out byte-identical."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import markers
from tests.support.broker_api import minted_token, registry_token
from tests.support.brokerproc import broker_env, broker_registry, provision, start_broker
from tests.support.cli import broker_settings, insecure, tailor_cli, tailor_env
from tests.support.clients import new_client
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.haproxy import start_haproxy
from tests.support.images import Layout, image
from tests.support.processes import free_port, spawn, stop, wait_http
from tests.support.registry import start_registry
from tests.support.skopeo import Skopeo

pytestmark = [pytest.mark.registry, pytest.mark.slow]

MOTO = Path(sys.executable).with_name("moto_server")


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[str]:
    markers.require("slow", "moto")
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = spawn(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, timeout=30, proc=proc)
    assert requests.put(f"{url}/stager-images", timeout=10).status_code == 200  # the bucket
    yield url
    stop(proc)


def test_staging_through_s3_backed_replicas(tmp_path: Path, moto: str, skopeo: Skopeo) -> None:
    cc, tailor, puller = (
        new_client("cloud-controller", "cc"),
        new_client("tailor-1", "tailor"),
        new_client("cell-1", "puller"),
    )
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    keys = provision(env, tmp_path, (cc, tailor, puller))
    broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
    env["BROKER_PUBLIC_URL"] = broker.url
    (tmp_path / "secret").write_text("one-secret-for-all-replicas-abcdefghijklmnop")
    # Credentials come from the registry's environment, never from its config file.
    registry_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    procs, addrs = [], []
    try:
        for i in range(2):
            proc, addr = broker_registry(
                env,
                tmp_path,
                f"r{i}",
                "--storage",
                "s3",
                "--bucket",
                "stager-images",
                "--region",
                "us-east-1",
                "--endpoint",
                moto,
                "--root",
                "/registry",
                "--http-secret-file",
                str(tmp_path / "secret"),
                registry_env=registry_env,
                timeout=30,
            )
            procs.append(proc)
            addrs.append(addr)
            assert "testing" not in (tmp_path / f"r{i}.yml").read_text()
        lb = start_haproxy(tmp_path, "s3registries", addrs, "/v2/", "(200|401)")
        upstream = start_registry(tmp_path / "up", htpasswd=(UPSTREAM_USER, UPSTREAM_PASSWORD))
        layout = Layout(tmp_path / "layout")
        layout.tag("v1", image(layout, seed=51, layers=2, layer_size=32 * 1024))
        skopeo.login(upstream)
        skopeo.push(layout, "v1", f"{upstream.host}/acme/s3:v1", all_platforms=False)

        token = minted_token(
            broker.url,
            cc,
            app_guid="app-s3",
            staging_guid="stg-s3",
            image=f"{upstream.host}/acme/s3:v1",
            username=UPSTREAM_USER,
            password=UPSTREAM_PASSWORD,
            tailor=tailor.name,
        )
        settings = broker_settings(broker.url, tailor.name, keys[tailor.name], token)
        run = tailor_cli(
            "stage",
            "--image",
            f"{upstream.host}/acme/s3:v1",
            "--staging-guid",
            "stg-s3",
            "--result-file",
            str(tmp_path / "r.json"),
            "--internal-registry",
            lb.host,
            *insecure(upstream.host, "127.0.0.1"),
            env=tailor_env(tmp_path, cache="cache", **settings),
        )
        assert run.returncode == 0, run.stderr
        repo, digest = run.stdout.strip().split("/", 1)[1].split("@")
        assert repo == "staging/app-s3/stg-s3"

        bearer = registry_token(broker.url, puller, f"repository:{repo}:pull").json()
        headers = {
            "Authorization": f"Bearer {bearer['token']}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        }
        manifest = requests.get(
            f"http://{lb.host}/v2/{repo}/manifests/{digest}", headers=headers, timeout=30
        )
        assert manifest.content == skopeo.raw(f"{upstream.host}/acme/s3:v1")
        for layer in json.loads(manifest.content)["layers"]:
            # The registry redirects blob reads to the object store (another host):
            # requests drops Authorization there, as the tailor does.
            first = requests.get(
                f"http://{lb.host}/v2/{repo}/blobs/{layer['digest']}",
                headers=headers,
                timeout=30,
                allow_redirects=False,
            )
            assert first.status_code == 307 and first.headers["Location"].startswith(moto)
            blob = requests.get(first.headers["Location"], timeout=30)
            assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
        upstream.stop()
        lb.stop()
    finally:
        for proc in procs:
            stop(proc)
        broker.stop()
