"""Real CNCF Distribution processes on free loopback ports, started and stopped by tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from tests.support import markers
from tests.support.processes import free_port, spawn, stop, wait_http

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry") or "docker-registry"


@dataclass
class Registry:
    """A running Distribution; ``host`` is ``127.0.0.1:PORT``."""

    root: Path
    host: str
    proc: subprocess.Popen
    username: str = ""
    password: str = ""
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        stop(self.proc)

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "store/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def start_registry(
    root: Path,
    *,
    htpasswd: tuple[str, str] | None = None,
    token: dict | None = None,
    host: str = "127.0.0.1",
) -> Registry:
    """Start Distribution with no auth, htpasswd auth or token auth (a dict for ``auth.token``)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "store")},
            "delete": {"enabled": True},
        },
        "http": {"addr": netloc, "secret": "test-only-http-secret"},
    }
    if htpasswd:
        user, password = htpasswd
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"{user}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}}
    if token:
        config["auth"] = {"token": token}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = root / "registry.log"
    proc = run_registry(root / "config.yml", netloc, log)
    registry = Registry(root, netloc, proc, log=log)
    if htpasswd:
        registry.username, registry.password = htpasswd
    return registry


def run_registry(
    config: Path,
    addr: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 15,
) -> subprocess.Popen[bytes]:
    """``docker-registry serve CONFIG`` (e.g. from `broker registry-config`), listening on
    ``addr``; returns once ``/v2/`` answers. ``env`` is added to this process's own."""
    markers.require("registry", "a Distribution registry")
    full_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    full_env.update(env or {})
    with log.open("ab") as out:
        proc = spawn(
            [REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT, env=full_env
        )
    try:
        wait_http(f"http://{addr}/v2/", timeout=timeout, proc=proc)
    except RuntimeError:
        stop(proc)
        raise
    return proc
