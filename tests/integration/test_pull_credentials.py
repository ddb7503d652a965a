"""Cells pull staged images with standard clients: skopeo (containers/image, nobody here
wrote it) against a real Distribution whose realm is a real ``broker serve``, with an
app's pull credential, and with a puller through ``docker-credential-stager``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.credentials import write_authfile
from tests.support.secured import Secured

pytestmark = pytest.mark.slow


def skopeo(
    authfile: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args[:1], "--authfile", str(authfile), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def issue(s: Secured, app: str) -> dict[str, str]:
    cc = s.clients["cc"]
    r = requests.post(
        f"{s.broker.url}/v1/apps/{app}/pull-credentials",
        headers=cc.headers(s.broker.url),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()


def revoke(s: Secured, app: str) -> None:
    cc = s.clients["cc"]
    r = requests.delete(
        f"{s.broker.url}/v1/apps/{app}/pull-credentials",
        headers=cc.headers(s.broker.url),
        timeout=30,
    )
    assert r.status_code == 204, r.text


def staged(s: Secured, staging: str, app: str) -> str:
    run = s.push(staging, app)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


def test_an_apps_credential_pulls_with_skopeo_again_and_again(secured: Secured) -> None:
    s = secured
    ref = staged(s, "stg-1", "app-1")
    staged(s, "stg-b", "app-2")
    cred = issue(s, "app-1")
    auth = write_authfile(
        s.tmp / "cell-auth.json", {s.internal_host: (cred["username"], cred["password"])}
    )
    repo = f"{s.internal_host}/staging/app-1/stg-1"

    # inspect (default mode: the manifest, the config and the tag list: several token
    # requests), copy by digest twice, sync the repository: one credential for all.
    inspected = skopeo(auth, "inspect", "--tls-verify=false", f"docker://{repo}:stg-1")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["RepoTags"] == ["stg-1"]
    for n in range(2):
        copied = skopeo(auth, "copy", "--all", "--src-tls-verify=false", f"docker://{ref}",
                        f"dir:{s.tmp / f'pulled-{n}'}")  # fmt: skip
        assert copied.returncode == 0, copied.stderr
    synced = skopeo(auth, "sync", "--all", "--src", "docker", "--dest", "dir",
                    "--src-tls-verify=false", repo, str(s.tmp / "synced"))  # fmt: skip
    assert synced.returncode == 0, synced.stderr

    # Only its app, only pull.
    other = skopeo(
        auth,
        "inspect",
        "--tls-verify=false",
        f"docker://{s.internal_host}/staging/app-2/stg-b:stg-b",
    )
    assert other.returncode != 0 and "unauthorized" in other.stderr.lower(), other.stderr
    push = skopeo(auth, "copy", "--dest-tls-verify=false", f"dir:{s.tmp / 'pulled-0'}",
                  f"docker://{repo}:forged")  # fmt: skip
    assert push.returncode != 0, push.stdout
    token = requests.get(
        f"{s.broker.url}/v1/registry-token",
        params={"service": "internal-registry", "scope": "registry:catalog:*"},
        auth=(cred["username"], cred["password"]),
        timeout=30,
    )
    assert token.status_code == 200
    catalog = requests.get(
        f"http://{s.internal_host}/v2/_catalog",
        headers={"Authorization": f"Bearer {token.json()['token']}"},
        timeout=30,
    )
    assert catalog.status_code == 401

    # Rotated: the old one keeps pulling for the grace; revoked: neither pulls.
    new = issue(s, "app-1")
    auth_new = write_authfile(
        s.tmp / "cell-auth-new.json", {s.internal_host: (new["username"], new["password"])}
    )
    for a in (auth, auth_new):
        assert (
            skopeo(a, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").returncode == 0
        )
    revoke(s, "app-1")
    for a in (auth, auth_new):
        refused = skopeo(a, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
        assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()

    log = s.broker.log.read_text()
    audit = json.dumps(s.audit_all())
    for secret in (cred["password"], new["password"]):
        assert secret not in log and secret not in audit
    grants = [json.loads(d) for e, c, r, d in s.audit() if c == "app-app-1"]
    assert grants and all(
        g["granted"] == [] or all(x.endswith(":pull") for x in g["granted"]) for g in grants
    )


def test_a_puller_pulls_through_the_credential_helper(secured: Secured) -> None:
    """skopeo runs ``docker-credential-stager`` itself (``credHelpers``), as podman and
    Docker do: the puller's key never leaves the cell, and one session serves the pull."""
    s = secured
    ref = staged(s, "stg-1", "app-1")
    helper = Path(sys.executable).parent / "docker-credential-stager"
    assert helper.exists(), "the package installs docker-credential-stager"
    auth = s.tmp / "helper-auth.json"
    auth.write_text(json.dumps({"credHelpers": {s.internal_host: "stager"}}))
    env = {
        **os.environ,
        "PATH": f"{helper.parent}:{os.environ.get('PATH', '')}",
        "STAGER_REGISTRY": s.internal_host,
        "STAGER_BROKER_URL": s.broker.url,
        "STAGER_CLIENT_ID": s.clients["puller"].name,
        "STAGER_CLIENT_KEY": str(s.keys["puller"]),
    }
    inspected = skopeo(
        auth, "inspect", "--tls-verify=false", f"docker://{ref.split('@')[0]}:stg-1", env=env
    )
    assert inspected.returncode == 0, inspected.stderr
    copied = skopeo(
        auth,
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{ref}",
        f"dir:{s.tmp / 'p'}",
        env=env,
    )
    assert copied.returncode == 0, copied.stderr
    events = [e for e, c, r, d in s.audit_all() if c == s.clients["puller"].name]
    assert events.count("puller.session") >= 2 and "registry.token" in events

    # Misconfigured: one line, exit 1, nothing secret.
    bare = {k: v for k, v in env.items() if not k.startswith("STAGER_CLIENT_KEY")}
    done = subprocess.run([str(helper), "get"], input=s.internal_host, capture_output=True,
                          text=True, env=bare, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.strip() == (
        "docker-credential-stager: set STAGER_CLIENT_KEY (the internal registry, the broker,"
        " a puller client, its key)"
    )
    # Another registry (Docker Hub, say, from a credsStore entry) gets nothing.
    elsewhere = subprocess.run([str(helper), "get"], input="https://index.docker.io/v1/",
                               capture_output=True, text=True, env=env, timeout=30,
                               check=False)  # fmt: skip
    assert elsewhere.returncode == 1
    assert elsewhere.stdout.strip() == "credentials not found in native keychain"
