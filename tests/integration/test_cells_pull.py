"""Cells pull staged images with standard runtimes nobody here wrote: podman and containerd
(``ctr``), from a real Distribution whose realm is a real ``broker serve``, with what the
platform hands a cell: an app's pull credential, or a puller through
``docker-credential-stager`` (skopeo's share: test_pull_credentials.py).

Each client asks the realm its own way (tests/integration/test_runtime_peers.py):
podman a GET with Basic at login and at every pull, or a POST with the refresh-token
grant when its auth file holds an identity token; ctr two POSTs of the password grant a
pull. All of them reuse what they were given; all of it works with one credential.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest
import requests

from tests.support.fixtures.systems import secured_system
from tests.support.proxy import Proxy
from tests.support.runtimes import containerd, ctr, podman, podman_home
from tests.support.secured import Secured
from tests.support.skopeo import Skopeo

pytestmark = pytest.mark.slow


def issue(s: Secured, app: str) -> tuple[str, str]:
    cc = s.clients["cc"]
    r = requests.post(f"{s.broker.url}/v1/apps/{app}/pull-credentials",
                      headers=cc.headers(s.broker.url), timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["username"], r.json()["password"]


def staged(s: Secured, staging: str, app: str) -> str:
    run = s.push(staging, app)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


def tokens_of(s: Secured, client: str) -> int:
    return sum(1 for e, c, r, d in s.audit() if c == client)


def test_podman_logs_in_once_and_pulls_again_and_again(secured: Secured, tmp_path: Path) -> None:
    s = secured
    first = staged(s, "stg-1", "app-1")
    staged(s, "stg-2", "app-1")
    staged(s, "stg-b", "app-2")
    user, secret = issue(s, "app-1")
    host = s.internal_host
    with podman_home(tmp_path / "podman", insecure=[host]) as home:
        login = podman(home, "login", "--tls-verify=false", "-u", user, "--password-stdin", host,
                       input=secret)  # fmt: skip
        assert login.returncode == 0, login.stderr
        for ref in (f"{host}/staging/app-1/stg-1:stg-1", f"{host}/staging/app-1/stg-2:stg-2",
                    first, f"{host}/staging/app-1/stg-1:stg-1"):  # fmt: skip
            pulled = podman(home, "pull", "--tls-verify=false", ref)
            assert pulled.returncode == 0, (ref, pulled.stderr)
        images = podman(home, "images", "--format", "{{.Repository}}:{{.Tag}}")
        assert sorted(images.stdout.split()) == [
            f"{host}/staging/app-1/stg-1:stg-1",
            f"{host}/staging/app-1/stg-2:stg-2",
        ]
        other = podman(home, "pull", "--tls-verify=false", f"{host}/staging/app-2/stg-b:stg-b")
        assert other.returncode != 0 and "unauthorized" in other.stderr.lower(), other.stderr
    assert tokens_of(s, user) >= 5  # login and every pull: the same credential each time


def test_podman_with_an_identity_token_posts_the_refresh_grant(
    secured: Secured, tmp_path: Path
) -> None:
    s = secured
    ref = staged(s, "stg-1", "app-1")
    user, secret = issue(s, "app-1")
    with podman_home(tmp_path / "podman", insecure=[s.internal_host]) as home:
        # As `docker login` stores an identity token: user "<token>", the token beside it.
        entry = {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": secret}
        (home / "auth.json").write_text(json.dumps({"auths": {s.internal_host: entry}}))
        for _ in range(2):
            pulled = podman(home, "pull", "--tls-verify=false", ref)
            assert pulled.returncode == 0, pulled.stderr
    assert tokens_of(s, user) == 2


def test_podman_pulls_as_a_puller_through_the_credential_helper(
    secured: Secured, tmp_path: Path
) -> None:
    s = secured
    ref = staged(s, "stg-1", "app-1")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "docker-credential-stager").exists()
    puller = s.clients["puller"].name
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "STAGER_REGISTRY": s.internal_host,
        "STAGER_BROKER_URL": s.broker.url,
        "STAGER_CLIENT_ID": puller,
        "STAGER_CLIENT_KEY": str(s.keys["puller"]),
    }
    with podman_home(tmp_path / "podman", insecure=[s.internal_host]) as home:
        (home / "auth.json").write_text(json.dumps({"credHelpers": {s.internal_host: "stager"}}))
        for _ in range(2):
            pulled = podman(home, "pull", "--tls-verify=false", ref, env=env)
            assert pulled.returncode == 0, pulled.stderr
    events = [e for e, c, r, d in s.audit_all() if c == puller]
    assert events.count("puller.session") == 2 and events.count("registry.token") >= 2


def test_containerd_pulls_with_the_apps_credential(secured: Secured, tmp_path: Path) -> None:
    """ctr takes credentials only on its command line (a test's own, here); containerd's
    CRI takes them from its configuration or the kubelet."""
    s = secured
    ref = staged(s, "stg-1", "app-1")
    user, secret = issue(s, "app-1")
    with containerd(tmp_path / "containerd") as daemon:
        for _ in range(2):
            pulled = ctr(daemon.address, "images", "pull", "--plain-http", "--user",
                         f"{user}:{secret}", ref)  # fmt: skip
            assert pulled.returncode == 0, pulled.stderr
        wrong = ctr(daemon.address, "images", "pull", "--plain-http", "--user",
                    f"{user}:{secret[:-4]}AAAA", ref.replace("stg-1@", "stg-1x@"))  # fmt: skip
        assert wrong.returncode != 0
    assert tokens_of(s, user) >= 2  # password-grant POSTs: one or two a pull


def test_a_pull_that_outlives_its_registry_token_gets_another(
    tmp_path: Path, skopeo: Skopeo
) -> None:
    """Registry tokens of 60 s, and a pull held back 62 s between its manifest and its
    blobs: podman asks the realm again mid-pull, with the same credential, and the pull
    completes. A single-use assertion could not have been asked with twice."""
    with secured_system(tmp_path, skopeo, {"BROKER_REGISTRY_TOKEN_SECONDS": "60"}) as s:
        ref = staged(s, "stg-1", "app-1")
        user, secret = issue(s, "app-1")
        proxy = Proxy(s.internal_host)
        try:
            digest = ref.split("@")[1]
            proxy.faults.slow_once[rf"/manifests/{digest}$"] = 62.0
            via = ref.replace(s.internal_host, proxy.host)
            with podman_home(tmp_path / "podman", insecure=[proxy.host]) as home:
                auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
                (home / "auth.json").write_text(json.dumps({"auths": {proxy.host: {"auth": auth}}}))
                pulled = podman(home, "pull", "--tls-verify=false", via, timeout=180)
                assert pulled.returncode == 0, pulled.stderr
        finally:
            proxy.stop()
        assert not proxy.faults.slow_once  # the pull was held back
        assert tokens_of(s, user) >= 2
