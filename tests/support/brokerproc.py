"""A real ``broker serve`` process on a free loopback port (test-only helper)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.clients import Client
from tests.support.registry import free_port, wait_http


def broker_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def post(self, path: str, headers: dict[str, str], json: object) -> requests.Response:
        return requests.post(self.url + path, headers=headers, json=json, timeout=30)


def start_broker(env: dict[str, str], log: Path, *, self_audience: bool = False) -> BrokerProcess:
    """Start ``broker serve``; with ``self_audience`` its public URL is its own address."""
    port = free_port()
    if self_audience:
        env = {**env, "BROKER_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", timeout=30, proc=proc)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"broker did not start: {log.read_text()[-2000:]}") from None
    return BrokerProcess(proc, url, log)


def broker_env(tmp: Path, database_url: str, public_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(
        BROKER_DATABASE_URL=database_url,
        BROKER_KEYS_DIR=str(tmp / "keys"),
        BROKER_PUBLIC_URL=public_url,
        BROKER_SWEEP_INTERVAL_SECONDS="0.5",
    )
    return env


def provision(env: dict[str, str], folder: Path, clients: Iterable[Client]) -> dict[str, Path]:
    """`broker keys init`, register every client; returns each client's private key file."""
    done = broker_cli(env, "keys", "init")
    assert done.returncode == 0, done.stderr
    keys = {}
    for c in clients:
        added = broker_cli(env, "clients", "add", c.name, "--role", c.role,
                           "--public-key", str(c.write_public(folder)))  # fmt: skip
        assert added.returncode == 0, added.stderr
        keys[c.name] = folder / f"{c.name}.key"
        keys[c.name].write_bytes(c.private_pem)
        keys[c.name].chmod(0o600)
    return keys
