"""Real ``broker`` processes: the command, and ``broker serve`` on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support import markers
from tests.support.clients import Client
from tests.support.processes import free_port, spawn, stop, wait_http
from tests.support.registry import run_registry


def children(pid: int) -> list[int]:
    """The direct children of process ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass  # the thread ended meanwhile
    return found


def settled(database_url: str, timeout: float = 15.0) -> None:
    """Wait until the running broker has placed every event written so far in its audit
    log (its integrator runs every second): a test that reads the log right after an
    answer would otherwise miss the newest events, still pending."""
    from broker.store import open_store

    store = open_store(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with store.transaction(write=False) as tx:
                pending = tx.pending_count()
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{pending} audit events still pending after {timeout} s")
            time.sleep(0.05)
    finally:
        store.close()


def broker_cli(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``broker ARGS`` to the end with exactly ``env`` (and ``input`` on stdin)."""
    markers.require("slow", "the broker command")
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        stop(self.proc)

    def workers(self) -> list[int]:
        """The pids of ``broker serve --workers N``'s worker processes (uvicorn's spawned
        children, not multiprocessing's resource tracker)."""
        found = []
        for pid in children(self.proc.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--multiprocessing-fork" in cmdline or any(b"spawn_main" in a for a in cmdline):
                found.append(pid)
        return found

    def post(self, path: str, headers: dict[str, str], json: object) -> requests.Response:
        return requests.post(self.url + path, headers=headers, json=json, timeout=30)


def start_broker(
    env: dict[str, str],
    log: Path,
    *,
    self_audience: bool = False,
    port: int | None = None,
    workers: int = 1,
) -> BrokerProcess:
    """Start ``broker serve`` (on ``port``, or a free one; ``workers`` worker processes);
    with ``self_audience`` its public URL is its own address."""
    markers.require("slow", "broker serve")
    port = port or free_port()
    if self_audience:
        env = {**env, "BROKER_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    out = log.open("ab")
    argv = [sys.executable, "-m", "broker.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    proc = spawn(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
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
        # Events reach the log within 0.2 s (1 s by default): tests that read it wait less.
        BROKER_AUDIT_CHECKPOINT_SECONDS="0.2",
    )
    return env


def provision(env: dict[str, str], folder: Path, clients: Iterable[Client]) -> dict[str, Path]:
    """`broker keys init`, register every client; returns each client's private key file."""
    done = broker_cli(env, "keys", "init")
    assert done.returncode == 0, done.stderr
    keys = {}
    for c in clients:
        public = str(c.write_public(folder))
        added = broker_cli(env, "clients", "add", c.name, "--role", c.role, "--public-key", public)
        assert added.returncode == 0, added.stderr
        keys[c.name] = folder / f"{c.name}.key"
        keys[c.name].write_bytes(c.private_pem)
        keys[c.name].chmod(0o600)
    return keys


def broker_registry(
    env: dict[str, str],
    folder: Path,
    name: str,
    *args: str,
    registry_env: dict[str, str] | None = None,
    timeout: float = 15,
) -> tuple[subprocess.Popen[bytes], str]:
    """`broker registry-config --addr ADDR ARGS` (a free loopback port) saved as
    ``folder/NAME.yml``, and a Distribution serving it (log: ``folder/NAME.log``)."""
    addr = f"127.0.0.1:{free_port()}"
    config = broker_cli(env, "registry-config", "--addr", addr, *args)
    assert config.returncode == 0, config.stderr
    path = folder / f"{name}.yml"
    path.write_text(config.stdout)
    proc = run_registry(path, addr, folder / f"{name}.log", env=registry_env, timeout=timeout)
    return proc, addr
