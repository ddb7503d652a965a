"""The whole flow against real processes: two registries, `broker serve`, the CLIs."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tailor.assertion import load_client_key
from tailor.broker_client import BrokerClient, BrokerError
from tests.support.broker_api import staging_token_body
from tests.support.brokerproc import BrokerProcess, broker_env, provision, settled, start_broker
from tests.support.cli import Run, broker_settings, insecure, tailor_cli, tailor_env
from tests.support.clients import Client, new_client
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER, files_holding
from tests.support.images import Layout, image, index
from tests.support.processes import descends_from
from tests.support.registry import Registry, start_registry
from tests.support.skopeo import Skopeo

pytestmark = [pytest.mark.registry, pytest.mark.slow]

CONFIG = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["exec /app/server --greeting 'hello world'"],
    "WorkingDir": "/app",
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
}


@dataclass
class Platform:
    tmp: Path
    upstream: Registry
    public: Registry
    internal: Registry
    broker: BrokerProcess
    cc: Client
    tailor: Client
    cc_key: Path
    tailor_key: Path
    skopeo: Skopeo

    @property
    def private_image(self) -> str:
        return f"{self.upstream.host}/acme/web:v1"

    def private_push(self) -> list[str]:
        """The start of `tailor push` of the private image for app-1."""
        image = ["--docker-image", self.private_image]
        return [*image, "--docker-username", UPSTREAM_USER, "--app-guid", "app-1"]

    def insecure(self) -> list[str]:
        return insecure(self.upstream.host, self.public.host, self.internal.host)

    def cc_client(self) -> BrokerClient:
        return BrokerClient(self.broker.url, load_client_key(self.cc.name, self.cc_key))

    def mint(self, staging_guid: str, image: str | None = None) -> str:
        answer = self.cc_client().mint(
            **staging_token_body(
                staging_guid=staging_guid,
                image=image or self.private_image,
                username=UPSTREAM_USER,
                password=UPSTREAM_PASSWORD,
                tailor=self.tailor.name,
            )
        )
        return str(answer["token"])

    def stage(
        self,
        staging_guid: str,
        result_file: Path,
        *extra: str,
        image: str | None = None,
        token: str | None = None,
    ) -> Run:
        """`tailor stage` of ``image`` (the private one unless given), with ``token``."""
        env = tailor_env(self.tmp)
        if token:
            env.update(broker_settings(self.broker.url, self.tailor.name, self.tailor_key, token))
        args = ["--image", image or self.private_image, "--staging-guid", staging_guid]
        args += ["--result-file", str(result_file), *extra]
        return tailor_cli("stage", *self.insecure(), *args, env=env)

    def push(self, *args: str, **env: str) -> Run:
        return tailor_cli("push", *args, *self.insecure(), env=tailor_env(self.tmp, **env))

    def audit(self) -> list[tuple[str, str | None, str | None]]:
        settled(f"sqlite:///{self.tmp / 'broker.sqlite'}")
        db = sqlite3.connect(self.tmp / "broker.sqlite")
        try:
            rows = db.execute("SELECT event, staging_guid, reason FROM audit_events ORDER BY seq")
            return [tuple(r) for r in rows]
        finally:
            db.close()


@pytest.fixture
def platform(tmp_path: Path, skopeo: Skopeo) -> Iterator[Platform]:
    upstream = start_registry(tmp_path / "upstream", htpasswd=(UPSTREAM_USER, UPSTREAM_PASSWORD))
    public = start_registry(tmp_path / "public")
    internal = start_registry(tmp_path / "internal")
    layout = Layout(tmp_path / "layout")
    amd = image(layout, seed=21, layers=3, config=CONFIG)
    arm = image(layout, seed=22, layers=3, arch="arm64", config=CONFIG)
    layout.tag("v1", index(layout, [amd, arm]))
    skopeo.login(upstream)
    skopeo.push(layout, "v1", f"{upstream.host}/acme/web:v1")
    skopeo.push(layout, "v1", f"{public.host}/library/hello:v1")

    cc, tailor = new_client("cloud-controller", "cc"), new_client("tailor", "tailor", "p256")
    keys = tmp_path / "client-keys"
    keys.mkdir()
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    key_files = provision(env, keys, (cc, tailor))
    broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
    p = Platform(
        tmp_path,
        upstream,
        public,
        internal,
        broker,
        cc,
        tailor,
        key_files[cc.name],
        key_files[tailor.name],
        skopeo,
    )
    yield p
    broker.stop()
    for reg in (upstream, public, internal):
        reg.stop()


class CmdlineWatcher:
    """Polls /proc/*/cmdline while a staging runs, keeping every tailor command line of
    this test's processes (another test may run tailor commands beside it)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CmdlineWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    except OSError:
                        continue
                    if "tailor" in line and descends_from(int(entry.name)):
                        self.seen.add(line)
            time.sleep(0.005)


def test_push_of_a_private_image_into_the_internal_registry(platform: Platform) -> None:
    p = platform
    with CmdlineWatcher() as watcher:
        run = p.push(
            *p.private_push(),
            "--staging-guid",
            "stg-push-1",
            "--internal-registry",
            p.internal.host,
            "--broker-url",
            p.broker.url,
            "--cc-client",
            p.cc.name,
            "--cc-key",
            str(p.cc_key),
            "--tailor-client",
            p.tailor.name,
            "--tailor-key",
            str(p.tailor_key),
            CF_DOCKER_PASSWORD=UPSTREAM_PASSWORD,
        )
    assert run.returncode == 0, run.stderr
    ref = run.stdout.strip().splitlines()[-1]
    upstream_raw = p.skopeo.raw(f"{p.upstream.host}/acme/web:v1")
    assert ref.startswith(f"{p.internal.host}/staging/app-1/stg-push-1@sha256:")
    assert p.skopeo.raw(ref) == upstream_raw
    assert p.skopeo.raw(f"{p.internal.host}/staging/app-1/stg-push-1:stg-push-1") == upstream_raw
    # The tailor ran (the watcher saw it) and no command line carried a secret.
    assert any(" stage " in line for line in watcher.seen), watcher.seen
    assert not [line for line in watcher.seen if UPSTREAM_PASSWORD in line or "st1." in line]
    assert UPSTREAM_PASSWORD not in run.stdout + run.stderr
    assert files_holding(p.tmp, UPSTREAM_PASSWORD, skip=("upstream", "skopeo")) == []
    events = [(e, r) for e, s, r in p.audit() if s == "stg-push-1"]
    assert [e for e, _ in events] == [
        "token.issued",
        "token.redeemed",
        "credentials.released",  # a Basic-only upstream the broker may not reach anyway
        "staging.completed",
        "credentials.purged",
    ]


def test_stage_writes_the_result_and_spends_the_token(platform: Platform) -> None:
    p = platform
    token = p.mint("stg-2")
    result_file = p.tmp / "result.json"
    run = p.stage("stg-2", result_file, "--internal-registry", p.internal.host, token=token)
    assert run.returncode == 0, run.stderr
    result = json.loads(result_file.read_text())
    ref = result["lifecycle_metadata"]["docker_image"]
    assert run.stdout.strip() == ref
    assert result["lifecycle_type"] == "docker"
    assert result["process_types"] == {
        "web": "/bin/sh -c 'exec /app/server --greeting '\"'\"'hello world'\"'\"''"
    }
    meta = json.loads(result["execution_metadata"])
    assert meta == {
        "cmd": CONFIG["Cmd"],
        "entrypoint": CONFIG["Entrypoint"],
        "workdir": "/app",
        "user": "root",
        "ports": [{"Port": 53, "Protocol": "udp"}, {"Port": 8080, "Protocol": "tcp"}],
    }
    looked = p.cc_client().lookup(token)
    assert looked["state"] == "completed" and looked["redeemed"] is True
    again = p.stage("stg-2", p.tmp / "again.json", token=token)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        "tailor: error: broker refused the staging token: staging token refused"
    )
    assert ("token.refused", "stg-2", "staging completed") in p.audit()


def test_not_opted_in_resolves_the_upstream_digest_and_copies_nothing(platform: Platform) -> None:
    p = platform
    token = p.mint("stg-3")
    result_file = p.tmp / "r3.json"
    run = p.stage("stg-3", result_file, token=token)
    assert run.returncode == 0, run.stderr
    raw = p.skopeo.raw(f"{p.upstream.host}/acme/web:v1")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    ref = json.loads(result_file.read_text())["lifecycle_metadata"]["docker_image"]
    assert ref == f"{p.upstream.host}/acme/web@{digest}"
    catalog = requests.get(f"{p.internal.url}/v2/_catalog", timeout=5).json()
    assert not catalog["repositories"]
    assert ("credentials.purged", "stg-3", None) in p.audit()


def test_public_image_needs_no_token(platform: Platform) -> None:
    p = platform
    result_file = p.tmp / "r4.json"
    public_image = f"{p.public.host}/library/hello:v1"
    run = p.stage("stg-4", result_file, "--internal-registry", p.internal.host, image=public_image)
    assert run.returncode == 0, run.stderr
    ref = json.loads(result_file.read_text())["lifecycle_metadata"]["docker_image"]
    assert ref.startswith(f"{p.internal.host}/staging/stg-4@sha256:")
    # The same image pushed through `tailor push` without a username: no broker involved.
    pushed = p.push(
        "--docker-image",
        f"{p.public.host}/library/hello:v1",
        "--app-guid",
        "app-2",
        "--staging-guid",
        "stg-5",
        "--internal-registry",
        p.internal.host,
        "--mount-from",
        "staging/stg-4",
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().split("@")[1] == ref.split("@")[1]
    assert "mounted" in pushed.stderr and " copied sha256" not in pushed.stderr
    assert [e for e in p.audit() if e[1] in ("stg-4", "stg-5")] == []


def test_a_failed_copy_still_closes_the_staging(platform: Platform) -> None:
    p = platform
    token = p.mint("stg-6")
    p.internal.stop()  # the copy cannot reach the internal registry
    run = p.stage("stg-6", p.tmp / "r6.json", "--internal-registry", p.internal.host, token=token)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tailor: error: cannot reach {p.internal.host}")
    assert not (p.tmp / "r6.json").exists()
    assert p.cc_client().lookup(token)["state"] == "failed"
    events = [(e, r) for e, s, r in p.audit() if s == "stg-6"]
    assert ("staging.failed", None) in events and ("credentials.purged", None) in events
    assert UPSTREAM_PASSWORD not in run.stdout + run.stderr


def test_a_token_for_another_image_is_not_used(platform: Platform) -> None:
    p = platform
    token = p.mint("stg-7", image=f"{p.upstream.host}/acme/other:v1")
    run = p.stage("stg-7", p.tmp / "r7.json", token=token)
    assert run.returncode == 1
    assert "the staging token is for" in run.stderr and "refusing to use it" in run.stderr
    assert p.cc_client().lookup(token)["state"] == "failed"


def test_a_token_for_another_staging_is_not_used(platform: Platform) -> None:
    """Staging A's token with --staging-guid B: refused; A (the token's) is closed and its
    credentials shredded; B, never redeemed, is left as it was."""
    p = platform
    token_a = p.mint("stg-a")
    token_b = p.mint("stg-b")
    run = p.stage("stg-b", p.tmp / "rb.json", token=token_a)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "the staging token is for staging stg-a, not stg-b" in run.stderr
    cc = p.cc_client()
    assert cc.lookup(token_a)["state"] == "failed"
    assert cc.lookup(token_b)["state"] == "open"
    catalog = requests.get(f"{p.internal.url}/v2/_catalog", timeout=5).json()
    assert not catalog["repositories"]  # nothing copied into B's repository
    assert ("credentials.purged", "stg-a", None) in p.audit()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--docker-password", "pw-on-the-command-line"], {}, "never pass the password"),
        ([], {}, "CF_DOCKER_PASSWORD"),
        (["--cc-key", ""], {"CF_DOCKER_PASSWORD": "x"}, "a private image needs --cc-key"),
    ],
)
def test_push_refuses_bad_input(
    platform: Platform, args: list[str], env: dict[str, str], message: str
) -> None:
    p = platform
    run = tailor_cli(
        "push",
        *p.private_push(),
        "--broker-url",
        p.broker.url,
        "--cc-key",
        str(p.cc_key),
        "--tailor-key",
        str(p.tailor_key),
        *args,
        env=tailor_env(p.tmp, **env),
        timeout=60,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert [e for e in p.audit() if e[0] == "token.issued"] == []


def test_the_broker_client_reports_refusals_in_one_line(platform: Platform) -> None:
    p = platform
    tailor = BrokerClient(p.broker.url, load_client_key(p.tailor.name, p.tailor_key))
    with pytest.raises(BrokerError) as info:
        tailor.redeem("st1.nope.nope")
    assert info.value.status == 400 and "\n" not in str(info.value)
    assert "PRIVATE" not in repr(load_client_key(p.tailor.name, p.tailor_key))
