"""What standard registry clients send to a registry's token realm (issue 13's groundwork).

podman 4.3 and skopeo 1.9 (both containers/image 5.23) and containerd 1.6's ``ctr`` pull
from a real Distribution with ``auth: token`` whose realm is the recording token server
of tests/support/tokenserver.py, through the proxy of tests/support/proxy.py (which can
slow a pull down). The image is built by tests/support/images.py and pushed with skopeo.

What each asks the realm:

- podman login: one GET with Basic, ``account`` and ``service``, no scope; the auth file
  keeps ``user:password`` only.
- podman pull: one GET with Basic, ``account``, ``service``, ``scope=repository:R:pull``
  a pull, the same credentials every time (a second pull of a stored image included).
- podman with an ``identitytoken`` in its auth file: one POST a pull,
  ``grant_type=refresh_token``, ``client_id=containers/image``, always that token.
- skopeo with ``--creds``: as podman pull, one GET an image; ``inspect`` one more to list
  the tags (not with ``--no-tags``), ``sync`` of a repository one more to list them.
- ctr pull ``--user U:P``: two POSTs a pull (resolve, then fetch), ``grant_type=password``,
  ``client_id=containerd-client``, ``username``, ``password``, ``service``, ``scope``.
- ctr pull ``--refresh T``: the same with ``grant_type=refresh_token``, always ``T``.

No client sends ``access_type=offline`` or ``offline_token``, and none uses or keeps a
refresh token the realm answers. A realm that answers POST with 405 (a GET-only realm, as
the broker's is) gets a GET with Basic after each of ctr's password-grant POSTs; a
refresh-token POST (ctr or containers/image) is not retried and the pull fails.

Expiry: containers/image takes ``expires_in`` as at least 60 s and asks again once that
has passed (seen by hand: a pull held back 62 s asked again, twice at once from parallel
blob fetches); containerd never asks again for a token it holds, whatever
``expires_in``. Distribution takes a token until 60 s past its ``exp``. No client asks
for a new token when the registry refuses one mid-pull (401): the pull fails.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.images import Layout, image
from tests.support.proxy import Proxy
from tests.support.registry import Registry, start_registry
from tests.support.runtimes import containerd, ctr, podman, podman_home
from tests.support.skopeo import Skopeo
from tests.support.tokenserver import SERVICE, Call, TokenServer

pytestmark = pytest.mark.slow

USER = "cell-puller"
PASSWORD = "cell-pw-Jq27-realm-only"
REPO = "staging/app-1/push-1"
PULL = f"repository:{REPO}:pull"


@dataclass
class Realm:
    """A token-auth Distribution, its recording realm, and the proxy clients use."""

    server: TokenServer
    registry: Registry
    proxy: Proxy
    tmp: Path

    @property
    def host(self) -> str:
        return self.proxy.host

    def ref(self, tag: str = "v1") -> str:
        return f"{self.proxy.host}/{REPO}:{tag}"

    def calls(self) -> list[Call]:
        """The realm's calls since the last time this was asked."""
        calls = list(self.server.calls)
        self.server.calls.clear()
        return calls


@pytest.fixture
def realm(tmp_path: Path, skopeo: Skopeo) -> Iterator[Realm]:
    server = TokenServer(USER, PASSWORD, tmp_path / "realm")
    registry = start_registry(tmp_path / "registry", token=server.registry_auth())
    registry.username, registry.password = USER, PASSWORD
    proxy = Proxy(registry.host)
    try:
        layout = Layout(tmp_path / "layout")
        layout.tag("v1", image(layout, seed=13, layers=2, layer_size=16 * 1024))
        skopeo.login(registry)
        skopeo.push(layout, "v1", f"{registry.host}/{REPO}:v1", all_platforms=False)
        skopeo.push(layout, "v1", f"{registry.host}/{REPO}:v2", all_platforms=False)
        server.calls.clear()
        yield Realm(server, registry, proxy, tmp_path)
    finally:
        proxy.stop()
        registry.stop()
        server.stop()


def ok(run: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert run.returncode == 0, run.stderr
    return run


def basic_get(call: Call, scopes: list[str]) -> bool:
    """A GET with Basic credentials for ``scopes``, as containers/image asks."""
    return (
        call.method == "GET"
        and call.basic_user == USER
        and call.authorized
        and call.scopes == scopes
        and call.params.get("service") == [SERVICE]
        and call.params.get("account") == [USER]
    )


def offline(call: Call) -> bool:
    """Whether a call asks for a refresh token (OAuth2 ``access_type``, Docker's GET flag)."""
    return "access_type" in call.params or "offline_token" in call.params


# podman ---------------------------------------------------------------------------------


def test_podman_logs_in_once_then_each_pull_asks_with_the_same_basic_credentials(
    realm: Realm,
) -> None:
    realm.server.refresh_on_get = True  # hand refresh tokens out: podman keeps none
    with podman_home(realm.tmp / "podman", insecure=[realm.host]) as home:
        login = ok(
            podman(home, "login", "-u", USER, "--password-stdin", realm.host, input=PASSWORD)
        )
        assert PASSWORD not in login.stdout + login.stderr
        [asked] = realm.calls()
        assert basic_get(asked, []), asked  # no scope: only whether the realm says yes
        assert asked.issued_refresh
        stored = json.loads((home / "auth.json").read_text())["auths"]
        assert stored == {
            realm.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        }

        for _ in range(2):  # the second pull finds the image stored and asks again
            ok(podman(home, "pull", "--quiet", realm.ref()))
            [asked] = realm.calls()
            assert basic_get(asked, [PULL]), asked
            assert not asked.refresh_token and not offline(asked)
        assert ok(podman(home, "image", "exists", realm.ref()))
        assert json.loads((home / "auth.json").read_text())["auths"] == stored


def test_podman_with_an_identity_token_posts_it_and_never_takes_the_new_one(
    realm: Realm,
) -> None:
    """An ``identitytoken`` in the auth file (as ``docker login`` stores one) is sent as an
    OAuth2 refresh-token grant; the refresh token answered is neither used nor stored. A
    realm that refuses POST (405) is not asked again with GET: the pull fails."""
    token = realm.server.new_refresh_token()
    entry = {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": token}
    with podman_home(realm.tmp / "podman", insecure=[realm.host]) as home:
        (home / "auth.json").write_text(json.dumps({"auths": {realm.host: entry}}))
        for tag in ("v1", "v2"):
            ok(podman(home, "pull", "--quiet", realm.ref(tag)))
            [asked] = realm.calls()
            assert (asked.method, asked.grant, asked.scopes) == ("POST", "refresh_token", [PULL])
            assert asked.params["client_id"] == ["containers/image"]
            assert asked.refresh_token == token and asked.issued_refresh != token
            assert asked.basic_user is None and "username" not in asked.params
            assert not offline(asked)
        assert json.loads((home / "auth.json").read_text())["auths"] == {realm.host: entry}

        realm.server.accept_post = False
        ok(podman(home, "rmi", "--all"))
        refused = podman(home, "pull", "--quiet", realm.ref())
        assert refused.returncode != 0
        assert [(c.method, c.grant) for c in realm.calls()] == [("POST", "refresh_token")]


# skopeo ---------------------------------------------------------------------------------


def test_skopeo_with_creds_asks_with_basic_once_an_image_and_once_to_list_tags(
    realm: Realm,
) -> None:
    creds = f"{USER}:{PASSWORD}"

    def skopeo(*args: str) -> list[Call]:
        ok(subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60))
        calls = realm.calls()
        assert all(basic_get(c, [PULL]) and not offline(c) for c in calls), calls
        return calls

    insecure = "--tls-verify=false"
    # inspect's default answer lists the repository's tags: one token for each
    assert len(skopeo("inspect", insecure, "--creds", creds, f"docker://{realm.ref()}")) == 2
    no_tags = ("inspect", "--no-tags", insecure, "--creds", creds, f"docker://{realm.ref()}")
    assert len(skopeo(*no_tags)) == 1
    out = realm.tmp / "out"
    copy = ("copy", "--src-tls-verify=false", "--src-creds", creds, "--quiet")
    assert len(skopeo(*copy, f"docker://{realm.ref()}", f"oci:{out}:x")) == 1
    sync = ["sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false"]
    sync += ["--src-creds", creds]
    assert len(skopeo(*sync, realm.ref(), str(out / "one"))) == 1
    # a repository: one token to list its tags, then one for each tag's image
    assert len(skopeo(*sync, f"{realm.host}/{REPO}", str(out / "all"))) == 3


# containerd -----------------------------------------------------------------------------


def test_ctr_posts_the_password_grant_twice_a_pull_and_ignores_refresh_tokens(
    realm: Realm,
) -> None:
    with containerd(realm.tmp / "containerd") as daemon:
        user = f"{USER}:{PASSWORD}"
        ok(ctr(daemon.address, "images", "pull", "--plain-http", "--user", user, realm.ref()))
        calls = realm.calls()
        # one token to resolve the tag (HEAD), one more to fetch (a new authorizer state)
        assert len(calls) == 2
        for asked in calls:
            assert (asked.method, asked.grant, asked.scopes) == ("POST", "password", [PULL])
            assert asked.params["client_id"] == ["containerd-client"]
            assert asked.params["username"] == [USER] and asked.params["service"] == [SERVICE]
            assert asked.authorized and asked.basic_user is None and not offline(asked)
            assert asked.issued_refresh and not asked.refresh_token  # answered, never used
        listed = ok(ctr(daemon.address, "images", "ls", "--quiet")).stdout.split()
        assert listed == [realm.ref()]


def test_ctr_with_a_refresh_token_posts_it_and_never_takes_the_new_one(realm: Realm) -> None:
    token = realm.server.new_refresh_token()
    with containerd(realm.tmp / "containerd") as daemon:
        ok(ctr(daemon.address, "images", "pull", "--plain-http", "--refresh", token, realm.ref()))
        calls = realm.calls()
        assert len(calls) == 2
        for asked in calls:
            assert (asked.method, asked.grant, asked.scopes) == ("POST", "refresh_token", [PULL])
            assert asked.params["client_id"] == ["containerd-client"]
            assert asked.refresh_token == token and asked.issued_refresh != token
            assert "username" not in asked.params and not offline(asked)


def test_ctr_falls_back_to_basic_get_from_a_realm_refusing_post_but_not_with_a_refresh_token(
    realm: Realm,
) -> None:
    """A GET-only realm (as the broker's): 405 to each password-grant POST, then ctr asks
    with GET and Basic, so a pull costs four requests; a refresh token has no fallback."""
    realm.server.accept_post = False
    with containerd(realm.tmp / "containerd") as daemon:
        user = f"{USER}:{PASSWORD}"
        ok(ctr(daemon.address, "images", "pull", "--plain-http", "--user", user, realm.ref()))
        calls = realm.calls()
        assert [(c.method, c.grant) for c in calls] == [("POST", "password"), ("GET", "basic")] * 2
        for asked in calls[1::2]:
            assert asked.basic_user == USER and asked.authorized and asked.scopes == [PULL]
            assert "account" not in asked.params  # unlike containers/image

        token = realm.server.new_refresh_token()
        refused = ctr(
            daemon.address, "images", "pull", "--plain-http", "--refresh", token, realm.ref("v2")
        )
        assert refused.returncode != 0 and "405" in refused.stderr
        assert [(c.method, c.grant) for c in realm.calls()] == [("POST", "refresh_token")]


# a token that runs out mid-pull ---------------------------------------------------------


def pull(client: str, realm: Realm) -> tuple[subprocess.CompletedProcess[str], float]:
    """Pull ``realm.ref()`` with ``client`` (fresh state); the result and how long it took."""
    start = time.monotonic()
    if client == "podman":
        with podman_home(realm.tmp / "podman", insecure=[realm.host]) as home:
            ok(podman(home, "login", "-u", USER, "--password-stdin", realm.host, input=PASSWORD))
            realm.calls()
            start = time.monotonic()
            run = podman(home, "pull", "--quiet", realm.ref())
    else:
        with containerd(realm.tmp / "containerd") as daemon:
            start = time.monotonic()
            user = f"{USER}:{PASSWORD}"
            run = ctr(daemon.address, "images", "pull", "--plain-http", "--user", user, realm.ref())
    return run, time.monotonic() - start


TOKENS_A_PULL = {"podman": 1, "ctr": 2}


@pytest.mark.parametrize("client", ["podman", "ctr"])
def test_a_short_expires_in_does_not_make_a_client_ask_again_mid_pull(
    realm: Realm, client: str
) -> None:
    """``expires_in`` 1 s and each manifest or blob answer 1.5 s late: the blobs are asked
    for with a token past its ``expires_in`` (the registry still takes it), and no client
    asks for another (containers/image counts at least 60 s; containerd never looks)."""
    realm.server.expires_in = 1
    realm.proxy.faults.slow = 1.5
    run, took = pull(client, realm)
    ok(run)
    assert took > 3  # the manifest, then the blobs, each answered 1.5 s late
    assert len(realm.calls()) == TOKENS_A_PULL[client]
    assert all(status == 200 for m, p, status in realm.proxy.answered if "/blobs/" in p)


@pytest.mark.parametrize("client", ["podman", "ctr"])
def test_a_token_the_registry_refuses_mid_pull_fails_the_pull_without_a_new_token(
    realm: Realm, client: str
) -> None:
    """The registry refuses tokens 2 s after they were issued and the manifest's answer
    comes 3 s late: the blob requests get 401, and no client asks the realm again."""
    realm.server.expires_in = 2
    realm.server.registry_seconds = 2
    realm.proxy.faults.slow = 3
    run, _ = pull(client, realm)
    assert run.returncode != 0
    assert len(realm.calls()) == TOKENS_A_PULL[client]
    blobs = [status for m, p, status in realm.proxy.answered if "/blobs/" in p]
    assert blobs and set(blobs) == {401}
