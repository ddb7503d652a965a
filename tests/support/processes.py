"""Free loopback ports, starting and stopping processes, waiting for a server (test-only).

Every long-running process a test starts goes through :func:`spawn`, and
tests/conftest.py calls :func:`reap` after each test: a fixture that fails half-way
through its set-up (a broker that does not start after three registries did) leaves
nothing running.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

# free_port hands out ports below the kernel's ephemeral range (32768-60999 on Linux): a
# port it returned is not taken meanwhile by an outgoing connection or a server bound to
# port 0. Under pytest-xdist each worker has a slice of its own (PYTEST_XDIST_WORKER
# "gw<n>" of PYTEST_XDIST_WORKER_COUNT), so two workers never hand out the same port.
_PORTS = range(16384, 32768)
_given: set[int] = set()
_rng = random.Random()  # its own: tests (and Hypothesis) seed the module's


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = len(_PORTS) // max(count, 1)
    start = _PORTS.start + (index % max(count, 1)) * size
    return range(start, start + size)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on now, and that this process has not handed
    out before (a test may ask for several before it starts anything on them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = _slice()
    if len(_given) > len(ports) // 2:
        _given.clear()
    for _ in range(200):
        port = _rng.choice(ports)
        if port in _given:
            continue
        with socket.socket(family) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket(family) as sock:  # the slice is crowded: any port the kernel picks
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def descends_from(pid: int, ancestor: int | None = None) -> bool:
    """Whether process ``pid`` is ``ancestor`` (this process by default) or one of its
    descendants, read from /proc. Tests that look through every process on the machine
    (for a command line, a process to scan) keep to their own with it: another test may run
    beside them (pytest-xdist), and so may anything else on the machine. False for a
    process that has gone."""
    ancestor = os.getpid() if ancestor is None else ancestor
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state": the ppid
    return False


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
