"""The Tailor never holds the user's password where the upstream speaks the token protocol:
the broker trades it at redemption for a pull token of exactly one repository, and the
bound Tailor renews that token through the broker while its staging is open.

Real processes: ``broker serve``, a private upstream Distribution with token auth (its
realm the recording token server of tests/support/tokenserver.py) behind a recording
proxy, an internal Distribution, and ``tailor push`` as the platform runs it.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.brokerproc import BrokerProcess, broker_env, provision, settled, start_broker
from tests.support.cli import TAILOR, Run, insecure, tailor_cli, tailor_env
from tests.support.clients import Clients
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.images import Layout, image
from tests.support.processes import descends_from
from tests.support.proxy import Proxy
from tests.support.registry import Registry, start_registry
from tests.support.skopeo import Skopeo
from tests.support.tokenserver import TokenRegistry

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    tmp: Path
    broker: BrokerProcess
    upstream: TokenRegistry
    proxy: Proxy
    internal: Registry
    keys: dict[str, Path]
    clients: Clients

    def push(self, staging: str, **env: str) -> Run:
        argv = self.push_argv(staging)[len(TAILOR) :]
        secret = {"CF_DOCKER_PASSWORD": UPSTREAM_PASSWORD, **env}
        return tailor_cli(*argv, env=tailor_env(self.tmp, **secret))

    def push_argv(self, staging: str) -> list[str]:
        """``tailor push`` of the upstream's team/app:v1 as the platform runs it."""
        image = f"{self.proxy.host}/team/app:v1"
        return [
            *TAILOR, "push", "--docker-image", image, "--docker-username", UPSTREAM_USER,
            "--app-guid", "app-1", "--staging-guid", staging,
            "--internal-registry", self.internal.host,
            *insecure(self.proxy.host, self.internal.host, self.broker.url.removeprefix("http://"),
                      self.upstream.server.host),
            "--broker-url", self.broker.url,
            "--cc-client", self.clients.cc.name, "--cc-key", str(self.keys[self.clients.cc.name]),
            "--tailor-client", self.clients.tailor.name,
            "--tailor-key", str(self.keys[self.clients.tailor.name]),
        ]  # fmt: skip

    def events(self) -> list[tuple[str, dict[str, object]]]:
        settled(f"sqlite:///{self.tmp / 'broker.sqlite'}")
        conn = sqlite3.connect(self.tmp / "broker.sqlite")
        try:
            rows = conn.execute("SELECT event, detail FROM audit_events ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [(e, json.loads(d) if d else {}) for e, d in rows]


@pytest.fixture
def setup(
    tmp_path: Path, clients: Clients, token_upstream: TokenRegistry, skopeo: Skopeo
) -> Iterator[Setup]:
    layout = Layout(tmp_path / "layout")
    layout.tag("v1", image(layout, seed=81, layers=12, layer_size=64 * 1024))
    skopeo.login(token_upstream.registry)
    skopeo.push(layout, "v1", f"{token_upstream.registry.host}/team/app:v1", all_platforms=False)
    token_upstream.server.calls.clear()
    proxy = Proxy(token_upstream.registry.host)
    internal = start_registry(tmp_path / "internal")
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    # The exchange is on by default: nothing here turns it on.
    env.update(BROKER_OUTBOUND_ALLOW="127.0.0.0/8", BROKER_INSECURE_REGISTRIES="127.0.0.1")
    keys = provision(env, tmp_path, clients.all())
    broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
    try:
        yield Setup(tmp_path, broker, token_upstream, proxy, internal, keys, clients)
    finally:
        broker.stop()
        internal.stop()
        proxy.stop()


def test_the_tailor_pulls_with_a_token_and_never_the_password(setup: Setup) -> None:
    run = setup.push("stg-1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith(f"{setup.internal.host}/staging/app-1/")
    # Only the broker asked the realm (its check at mint, its trade at redemption), with
    # the user's credentials, for exactly one pull; the Tailor never did.
    calls = setup.upstream.server.calls
    assert [(c.basic_user, c.scopes) for c in calls] == [
        (UPSTREAM_USER, ["repository:team/app:pull"])
    ] * 2
    # The upstream saw Bearer tokens and nothing else (the first ping is anonymous).
    schemes = {h.get("Authorization", "").split(" ")[0] for _, _, h in setup.proxy.requests}
    assert schemes <= {"", "Bearer"} and "Bearer" in schemes, schemes
    events = setup.events()
    names = [e for e, _ in events]
    assert "credentials.exchanged" in names and "credentials.released" not in names
    [exchanged] = [d for e, d in events if e == "credentials.exchanged"]
    assert exchanged["scope"] == "repository:team/app:pull" and exchanged["refresh"] is False
    assert UPSTREAM_PASSWORD not in setup.broker.log.read_text() + run.stderr + run.stdout


def test_a_copy_outliving_its_tokens_renews_them_through_the_broker(setup: Setup) -> None:
    """Upstream tokens of 1 s that the registry refuses 2 s after issue, and a pull slowed
    to several seconds: the copy outlives more than three tokens, the Tailor asks the
    broker for fresh ones (never the password), and the copy completes."""
    server = setup.upstream.server
    server.expires_in, server.registry_seconds = 1, 2
    # Blobs only: the broker's check of each token (a manifest HEAD) stays quick, so a
    # token is young when the Tailor gets it, as it is with tokens that live minutes.
    setup.proxy.faults.slow_blobs = 1.5
    run = setup.push("stg-1")
    assert run.returncode == 0, run.stderr
    refreshes = [d for e, d in setup.events() if e == "credentials.exchanged" and d["refresh"]]
    assert len(refreshes) >= 3, setup.events()
    assert all(c.basic_user == UPSTREAM_USER for c in server.calls)  # the broker, each time


def test_a_refresh_after_the_staging_ended_is_refused(setup: Setup) -> None:
    import requests

    from tests.support.broker_api import minted_token

    url, c = setup.broker.url, setup.clients
    token = minted_token(url, c.cc, staging_guid="stg-9", image=f"{setup.proxy.host}/team/app:v1",
                         username=UPSTREAM_USER, password=UPSTREAM_PASSWORD,
                         tailor=c.tailor.name)  # fmt: skip
    key = {"Idempotency-Key": "first-redemption-key-0001"}
    redeemed = requests.post(url + "/v1/redemptions", headers={**c.tailor.headers(url), **key},
                             json={"token": token}, timeout=30)  # fmt: skip
    assert redeemed.status_code == 200, redeemed.text
    body = redeemed.json()
    asked = len(setup.upstream.server.calls)
    # A replay, even with a key of its own, is refused without using the credentials; the
    # caller's own repeat (its key) gets a token again.
    other_key = {"Idempotency-Key": "someone-elses-key-00001"}
    replay = requests.post(url + "/v1/redemptions", headers={**c.tailor.headers(url), **other_key},
                           json={"token": token}, timeout=30)  # fmt: skip
    assert replay.status_code == 400 and len(setup.upstream.server.calls) == asked
    repeat = requests.post(url + "/v1/redemptions", headers={**c.tailor.headers(url), **key},
                           json={"token": token}, timeout=30)  # fmt: skip
    assert repeat.status_code == 200 and repeat.json()["upstream_token"] is not None
    assert len(setup.upstream.server.calls) == asked + 1
    assert body["username"] is None and body["password"] is None
    assert body["upstream_token"]["scope"] == "repository:team/app:pull"
    refresh = "/v1/stagings/stg-9/upstream-token"
    again = requests.post(url + refresh, headers=c.tailor.headers(url), json={"token": token},
                          timeout=30)  # fmt: skip
    assert again.status_code == 200 and again.json()["token"] != body["upstream_token"]["token"]
    other = requests.post(url + refresh, headers=c.tailor2.headers(url), json={"token": token},
                          timeout=30)  # fmt: skip
    assert other.status_code == 400  # not the bound tailor
    elsewhere = url + "/v1/stagings/stg-1/upstream-token"
    wrong = requests.post(elsewhere, headers=c.tailor.headers(url), json={"token": token},
                          timeout=30)  # fmt: skip
    assert wrong.status_code == 400  # another staging's path
    done = requests.post(url + "/v1/stagings/stg-9/complete", headers=c.tailor.headers(url),
                         json={"status": "succeeded"}, timeout=30)  # fmt: skip
    assert done.status_code == 200
    after = requests.post(url + refresh, headers=c.tailor.headers(url), json={"token": token},
                          timeout=30)  # fmt: skip
    assert after.status_code == 400
    refused = [d.get("action") for e, d in setup.events() if e == "token.refused"]
    assert refused.count("refresh") == 3 and refused.count("redeem") == 1
    assert UPSTREAM_PASSWORD not in redeemed.text + again.text


def test_a_basic_only_upstream_gets_the_password_released_and_audited(
    tmp_path: Path, clients: Clients, upstream: Registry, skopeo: Skopeo
) -> None:
    import requests

    from tests.support.broker_api import mint

    layout = Layout(tmp_path / "layout")
    layout.tag("v1", image(layout, seed=82, layers=1))
    skopeo.login(upstream)
    skopeo.push(layout, "v1", f"{upstream.host}/acme/web:v1", all_platforms=False)
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    env.update(BROKER_OUTBOUND_ALLOW="127.0.0.0/8", BROKER_INSECURE_REGISTRIES="127.0.0.1")
    provision(env, tmp_path, clients.all())
    for mode in ("when-needed", "never"):
        broker = start_broker({**env, "BROKER_RELEASE_PASSWORDS": mode}, tmp_path / "b.log",
                              self_audience=True)  # fmt: skip
        try:
            url = broker.url
            body = {"staging_guid": f"s-{mode}", "image": f"{upstream.host}/acme/web:v1",
                    "username": UPSTREAM_USER, "password": UPSTREAM_PASSWORD,
                    "tailor": clients.tailor.name}  # fmt: skip
            minted = mint(url, clients.cc, **body)
            if mode == "never":  # refused at once, at the push
                assert minted.status_code == 422, minted.text
                assert "only does Basic auth" in minted.json()["detail"]
                continue
            assert minted.status_code == 201, minted.text
            r = requests.post(url + "/v1/redemptions", headers=clients.tailor.headers(url),
                              json={"token": minted.json()["token"]}, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["password"] == UPSTREAM_PASSWORD
            assert r.json()["upstream_token"] is None
            later = mint(url, clients.cc, **{**body, "staging_guid": "s-later"}).json()["token"]
        finally:
            broker.stop()
    # Redeemed where the broker's outbound policy forbids the registry, under "never": a
    # refusal the Tailor will not retry (422, as at mint), not "unreachable" (503).
    broker = start_broker({**env, "BROKER_RELEASE_PASSWORDS": "never", "BROKER_OUTBOUND_ALLOW": ""},
                          tmp_path / "b.log", self_audience=True)  # fmt: skip
    try:
        r = requests.post(broker.url + "/v1/redemptions", json={"token": later}, timeout=30,
                          headers=clients.tailor.headers(broker.url))  # fmt: skip
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("the broker may not reach the upstream registry")
    finally:
        broker.stop()
    conn = sqlite3.connect(tmp_path / "broker.sqlite")
    rows = conn.execute("SELECT event, detail FROM audit_events WHERE event LIKE 'credentials.%'")
    released = [json.loads(d) for e, d in rows if e == "credentials.released"]
    conn.close()
    assert len(released) == 1 and released[0]["reason"].startswith("basic-only registry")


def test_the_credentials_are_checked_at_mint(setup: Setup) -> None:
    """A wrong password fails the push at once with the registry's own words, and opens
    no staging; an unreachable registry is no refusal (it may answer by staging time)."""
    from tests.support.broker_api import mint
    from tests.support.processes import free_port

    server = setup.upstream.server
    server.refuse_wrong = server.explain = True
    url, c = setup.broker.url, setup.clients
    image = f"{setup.proxy.host}/team/app:v1"
    body = {"image": image, "username": UPSTREAM_USER, "tailor": c.tailor.name}
    started = time.monotonic()
    wrong = mint(url, c.cc, staging_guid="s-wrong", password="not-the-password", **body)
    took = time.monotonic() - started
    assert wrong.status_code == 422 and wrong.headers["content-type"] == "application/problem+json"
    detail = wrong.json()["detail"]
    assert detail.startswith("the upstream registry refused the credentials: token server")
    assert "not-the-password" not in detail
    print(f"wrong password at mint refused in {took * 1000:.0f} ms")
    good = mint(url, c.cc, staging_guid="s-good", password=UPSTREAM_PASSWORD, **body)
    assert good.status_code == 201, good.text
    gone = f"127.0.0.1:{free_port()}/team/app:v1"
    unreachable = mint(url, c.cc, staging_guid="s-away", password=UPSTREAM_PASSWORD,
                       **{**body, "image": gone})  # fmt: skip
    assert unreachable.status_code == 201, unreachable.text
    # A registry that takes the connection and never answers holds the push up for
    # BROKER_UPSTREAM_CHECK_SECONDS (3 s), not for the redemption's 10 s deadline.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        held = f"127.0.0.1:{silent.getsockname()[1]}/team/app:v1"
        slow = mint(url, c.cc, staging_guid="s-slow", password=UPSTREAM_PASSWORD,
                    **{**body, "image": held})  # fmt: skip
        waited = time.monotonic() - started
    assert slow.status_code == 201, slow.text
    assert 2.5 < waited < 8, waited
    issued = {s: d.get("upstream") for s, d in _issued(setup)}
    assert issued["s-good"] == "token"
    assert str(issued["s-away"]).startswith("not checked:")
    assert str(issued["s-slow"]).startswith("not checked:") and "3 s" in str(issued["s-slow"])
    assert "s-wrong" not in issued  # no staging opened, nothing sealed


def _issued(setup: Setup) -> list[tuple[str, dict[str, object]]]:
    settled(f"sqlite:///{setup.tmp / 'broker.sqlite'}")
    conn = sqlite3.connect(setup.tmp / "broker.sqlite")
    try:
        rows = conn.execute(
            "SELECT staging_guid, detail FROM audit_events WHERE event='token.issued'"
        ).fetchall()
    finally:
        conn.close()
    return [(s, json.loads(d)) for s, d in rows]


def _find_stage(staging: str) -> int | None:
    """The pid of the running ``tailor stage`` for ``staging`` (the staging task) that
    this test started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stage" in argv and staging.encode() in argv and b"tailor.cli" in argv:
            if descends_from(int(entry.name)):
                return int(entry.name)
    return None


def _process_bytes(pid: int) -> dict[str, bytes]:
    """What a process holds, read as root: its environment, argv, the files it has open,
    and every readable region of its memory."""
    proc = Path(f"/proc/{pid}")
    seen = {"environ": (proc / "environ").read_bytes(), "cmdline": (proc / "cmdline").read_bytes()}
    for fd in (proc / "fd").iterdir():
        try:
            target = Path(str(fd.readlink()))
            if target.is_file() and target.stat().st_size < 64 * 1024 * 1024:
                seen[f"fd {target}"] = target.read_bytes()
        except OSError:
            continue
    memory = bytearray()
    with open(proc / "maps") as maps, open(proc / "mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[vsyscall]" in line or "[vvar]" in line:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                memory += mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
    seen["memory"] = bytes(memory)
    return seen


def test_the_password_is_never_in_the_staging_task(setup: Setup) -> None:
    """A canary password, looked for in the running ``tailor stage`` during its copy: its
    environment, argv, open files and whole readable memory (and its output and result
    afterwards). The staging token, which its environment carries, is the control: the
    scan finds what is there."""
    import subprocess
    import time

    setup.proxy.faults.slow = 0.8  # a copy of a few seconds, to look at it meanwhile
    env = tailor_env(setup.tmp, CF_DOCKER_PASSWORD=UPSTREAM_PASSWORD)
    push = setup.push_argv("stg-canary")
    proc = subprocess.Popen(push, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scans = copying = 0
    found: set[str] = set()
    token_seen = False
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            pid = _find_stage("stg-canary")
            if pid is None:
                time.sleep(0.05)
                continue
            blobs = any("/blobs/" in p for _, p, _ in setup.proxy.requests)
            try:
                held = _process_bytes(pid)
            except OSError:
                continue  # it ended between the look and the read
            scans += 1
            copying += blobs  # after the redemption: the copy is under way
            found |= {where for where, data in held.items() if UPSTREAM_PASSWORD.encode() in data}
            token_seen = token_seen or b"STAGING_TOKEN=st1." in held["environ"]
            time.sleep(0.2)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert scans >= 3 and copying >= 2, (scans, copying)
    assert token_seen  # the control: the scan sees what the process holds
    assert found == set(), found
    assert UPSTREAM_PASSWORD.encode() not in out + err


def test_a_realm_that_takes_only_the_oauth2_post_is_traded_with_too(setup: Setup) -> None:
    """A realm answering the token GET with 405 (some registries only take the OAuth2
    form): the broker posts the password grant, and the staging goes on with the token."""
    server = setup.upstream.server
    server.get_status = 405
    run = setup.push("stg-post")
    assert run.returncode == 0, run.stderr
    posts = [c for c in server.calls if c.method == "POST"]
    assert posts and all(c.grant == "password" for c in posts), server.calls
    assert [e for e, _ in setup.events()].count("credentials.exchanged") == 1
