"""HAProxy (Debian's) in front of broker and registry replicas, on loopback (test-only)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT, markers
from tests.support.processes import free_port, spawn, stop, wait_http


@dataclass
class Balancer:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.proc)


SHIPPED = ROOT / "docs" / "deploy" / "haproxy.cfg"
Rewrite = tuple[str, Callable[[re.Match[str]], str]]


def haproxy_binary() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def shipped_config(rules: list[Rewrite]) -> str:
    """``docs/deploy/haproxy.cfg``, valid as shipped (``haproxy -c``), with each
    ``(pattern, replacement)`` applied; a pattern the file no longer has fails loudly."""
    checked = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(SHIPPED)], capture_output=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = SHIPPED.read_text()
    for pattern, replace in rules:
        config, n = re.subn(pattern, replace, config)
        assert n, f"{SHIPPED} has no {pattern!r}"
    return config


def run_haproxy(root: Path, name: str, config: str, ready_url: str) -> subprocess.Popen[bytes]:
    """HAProxy on ``config`` (saved as ``root/haproxy-NAME.cfg``, its log beside it), once
    ``ready_url`` answers."""
    markers.require("slow", "haproxy")
    cfg = root / f"haproxy-{name}.cfg"
    cfg.write_text(config)
    log = (root / f"haproxy-{name}.log").open("wb")
    proc = spawn([haproxy_binary(), "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    wait_http(ready_url, proc=proc)
    return proc


def start_haproxy(
    root: Path, name: str, servers: list[str], check: str, expect: str, port: int | None = None
) -> Balancer:
    """Round-robin over ``servers`` with active health checks and redispatch on failure."""
    markers.require("slow", "haproxy")
    port = port or free_port()
    lines = "\n".join(
        f"    server s{i} {server} check inter 300ms fall 1 rise 2"
        for i, server in enumerate(servers)
    )
    config = f"""
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
    retry-on conn-failure
frontend {name}_in
    bind 127.0.0.1:{port}
    default_backend {name}
backend {name}
    balance roundrobin
    option httpchk GET {check}
    http-check expect rstatus {expect}
{lines}
"""
    proc = run_haproxy(root, name, config, f"http://127.0.0.1:{port}{check}")
    return Balancer(proc, port)
