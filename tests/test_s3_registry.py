"""Two Distribution replicas on an S3-compatible store (moto's server) behind HAProxy,
secured by the broker: a staging goes in, and comes back out byte-identical."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, Skopeo
from tests.support.brokerproc import broker_cli, broker_env, provision, start_broker
from tests.support.clients import new_client
from tests.support.haproxy import start_haproxy
from tests.support.images import Layout, image
from tests.support.registry import free_port, start_registry, wait_http

MOTO = Path(sys.executable).with_name("moto_server")


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, timeout=30, proc=proc)
    assert requests.put(f"{url}/stager-images", timeout=10).status_code == 200  # the bucket
    yield url
    proc.terminate()
    proc.wait(10)


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
    registry_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    # Credentials come from the registry's environment, never from its config file.
    registry_env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    procs, addrs = [], []
    try:
        for i in range(2):
            addrs.append(f"127.0.0.1:{free_port()}")
            config = broker_cli(
                env,
                "registry-config",
                "--addr",
                addrs[-1],
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
            )
            assert config.returncode == 0, config.stderr
            assert "testing" not in config.stdout
            (tmp_path / f"r{i}.yml").write_text(config.stdout)
            log = (tmp_path / f"r{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    ["docker-registry", "serve", str(tmp_path / f"r{i}.yml")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=registry_env,
                )
            )
            wait_http(f"http://{addrs[-1]}/v2/", timeout=30, proc=procs[-1])
        lb = start_haproxy(tmp_path, "s3registries", addrs, "/v2/", "(200|401)")
        upstream = start_registry(tmp_path / "up", htpasswd=(UPSTREAM_USER, UPSTREAM_PASSWORD))
        layout = Layout(tmp_path / "layout")
        layout.tag("v1", image(layout, seed=51, layers=2, layer_size=32 * 1024))
        skopeo.login(upstream)
        skopeo.push(layout, "v1", f"{upstream.host}/acme/s3:v1", all_platforms=False)

        token = requests.post(
            f"{broker.url}/v1/staging-tokens",
            headers=cc.headers(broker.url),
            json={
                "app_guid": "app-s3",
                "staging_guid": "stg-s3",
                "image": f"{upstream.host}/acme/s3:v1",
                "username": UPSTREAM_USER,
                "password": UPSTREAM_PASSWORD,
                "tailor": tailor.name,
            },
            timeout=30,
        ).json()["token"]
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
        run_env.update(
            STAGING_TOKEN=token,
            TAILOR_BROKER_URL=broker.url,
            TAILOR_CLIENT_ID=tailor.name,
            TAILOR_CLIENT_KEY=str(keys[tailor.name]),
            TAILOR_CACHE_DIR=str(tmp_path / "cache"),
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "tailor.cli",
                "stage",
                "--image",
                f"{upstream.host}/acme/s3:v1",
                "--staging-guid",
                "stg-s3",
                "--result-file",
                str(tmp_path / "r.json"),
                "--internal-registry",
                lb.host,
                "--insecure-registry",
                upstream.host,
                "--insecure-registry",
                "127.0.0.1",
            ],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        repo, digest = run.stdout.strip().split("/", 1)[1].split("@")
        assert repo == "staging/app-s3/stg-s3"

        auth = base64.b64encode(f"{puller.name}:{puller.assertion(broker.url)}".encode()).decode()
        bearer = requests.get(
            f"{broker.url}/v1/registry-token",
            params={"service": "internal-registry", "scope": f"repository:{repo}:pull"},
            headers={"Authorization": f"Basic {auth}"},
            timeout=30,
        ).json()
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
            proc.terminate()
            proc.wait(10)
        broker.stop()
