"""`tailor copy` with credentials that come only from a credential file, against real
registries: REGISTRY_AUTH_FILE (checked with skopeo, which reads the same file), and a
Docker config.json whose entry is the placeholder next to a credsStore (a real helper)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import insecure
from tests.support.credentials import (
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    assert_no_secret,
    write_helper,
)
from tests.support.images import Layout, image
from tests.support.registry import Registry
from tests.support.skopeo import Skopeo
from tests.support.tokenserver import TokenRegistry


def pair(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "layout")
    lay.tag("v1", image(lay, seed=16, layers=2))
    return lay


def test_credentials_only_from_registry_auth_file_the_same_file_skopeo_reads(
    upstream: Registry, internal: Registry, skopeo: Skopeo, layout: Layout, tailor, tmp_path: Path
) -> None:
    skopeo.login(upstream)
    skopeo.push(layout, "v1", f"{upstream.host}/team/app:v1")
    # What podman login HOST/team writes, next to a registry-wide entry with a stale password
    # keyed as an old docker login wrote it: the repository's entry is the more specific.
    authfile = tmp_path / "elsewhere" / "auth.json"
    authfile.parent.mkdir()
    authfile.write_text(
        json.dumps(
            {
                "auths": {
                    f"{upstream.host}/team": pair(UPSTREAM_USER, UPSTREAM_PASSWORD),
                    f"http://{upstream.host}/v2/": pair(UPSTREAM_USER, "stale-password-16"),
                }
            }
        )
    )
    # The Docker config.json (DOCKER_CONFIG) has nothing; neither has the runtime directory.
    src, dst = f"{upstream.host}/team/app:v1", f"{internal.host}/files/app:v1"
    hosts = insecure(upstream.host, internal.host)
    run = tailor("copy", *hosts, src, dst, env={"REGISTRY_AUTH_FILE": str(authfile)})
    assert run.returncode == 0, run.stderr
    pinned = run.stdout.strip().splitlines()[-1]
    # skopeo, given the same file, reads the same image: the copy is byte for byte.
    raw = skopeo.raw(src, authfile=authfile)
    assert pinned == f"{internal.host}/files/app@{digest_of(raw)}"
    assert skopeo.raw(pinned) == raw
    assert_no_secret(run, UPSTREAM_PASSWORD)

    # Another repository on that registry gets the registry-wide entry: the stale password,
    # sent (the normalized key matched) and refused, in one line.
    skopeo.push(layout, "v1", f"{upstream.host}/other/app:v1")
    refused = tailor(
        "copy",
        *hosts,
        f"{upstream.host}/other/app:v1",
        f"{internal.host}/files/other:v1",
        env={"REGISTRY_AUTH_FILE": str(authfile)},
    )
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"tailor: error: unauthorized: registry {upstream.host} refused the basic credentials"
        )
    ), refused.stderr
    assert_no_secret(refused, UPSTREAM_PASSWORD, "stale-password-16")


def test_a_docker_login_placeholder_asks_the_creds_store(
    token_upstream: TokenRegistry,
    internal: Registry,
    skopeo: Skopeo,
    layout: Layout,
    tailor,
    tmp_path: Path,
) -> None:
    reg, server = token_upstream.registry, token_upstream.server
    skopeo.login(reg)
    skopeo.push(layout, "v1", f"{reg.host}/team/app:v1")
    # docker login with a credsStore: the secret in the store, an empty entry in the file.
    bin_dir, log = tmp_path / "bin", tmp_path / "helper.log"
    write_helper(bin_dir, "e2estore", {reg.host: (UPSTREAM_USER, UPSTREAM_PASSWORD)}, log)
    config = tmp_path / "docker-config" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {reg.host: {}}, "credsStore": "e2estore"}))
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    start = len(server.calls)
    run = tailor(
        "copy",
        *insecure(reg.host, internal.host, server.host),
        f"{reg.host}/team/app:v1",
        f"{internal.host}/stored/app:v1",
        env={"PATH": path},
    )
    assert run.returncode == 0, run.stderr
    # The store was asked for each side's registry; its answer went to the token realm.
    assert log.read_text().splitlines() == [reg.host, internal.host]
    assert [(c.method, c.basic_user, c.authorized) for c in server.calls[start:]] == [
        ("GET", UPSTREAM_USER, True)
    ]
    assert skopeo.raw(run.stdout.strip().splitlines()[-1]) == skopeo.raw(f"{reg.host}/team/app:v1")
    assert_no_secret(run, UPSTREAM_PASSWORD)

    # Docker itself, when installed, reads the same file the same way.
    docker = shutil.which("docker")
    if docker is None:
        return
    before = len(server.calls)
    out = subprocess.run(
        [docker, "manifest", "inspect", "--insecure", f"{reg.host}/team/app:v1"],
        env={**os.environ, "PATH": path, "DOCKER_CONFIG": str(config.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert set(log.read_text().splitlines()[2:]) == {reg.host}  # (Docker asks more than once)
    assert (UPSTREAM_USER, True) in [(c.basic_user, c.authorized) for c in server.calls[before:]]
    assert UPSTREAM_PASSWORD not in out.stdout + out.stderr
