"""Free loopback ports, starting and stopping processes, waiting for a server (test-only).

Every long-running process a test starts goes through :func:`spawn`, and
tests/conftest.py calls :func:`reap` after each test: a fixture that fails half-way
through its set-up (a broker that does not start after three registries did) leaves
nothing running.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import requests


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


_spawned: list[subprocess.Popen[Any]] = []


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, ...)``, remembered so that :func:`reap` can stop it."""
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
    _spawned.append(proc)
    return proc


def reap() -> int:
    """Stop every spawned process still running (after a test); how many there were."""
    running = [p for p in _spawned if p.poll() is None]
    for proc in running:
        stop(proc, timeout=5)
    _spawned.clear()
    return len(running)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
