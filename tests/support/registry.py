"""Real CNCF Distribution processes on free loopback ports, started and stopped by tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import requests

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry") or "docker-registry"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

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
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(root / "config.yml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    registry = Registry(root, netloc, proc, log=log)
    if htpasswd:
        registry.username, registry.password = htpasswd
    try:
        wait_http(f"{registry.url}/v2/", proc=proc)
    except RuntimeError:
        registry.stop()
        raise
    return registry
