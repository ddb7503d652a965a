"""The real ``tailor`` command in a subprocess, with an environment of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import markers

TAILOR = [sys.executable, "-m", "tailor.cli"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]


def tailor_cli(*args: str, env: dict[str, str], timeout: float = 300) -> Run:
    """Run ``tailor ARGS`` to the end with exactly ``env``."""
    markers.require("slow", "the tailor command")
    argv = [*TAILOR, *args]
    out = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    return Run(out.returncode, out.stdout, out.stderr, argv)


def tailor_env(tmp: Path, cache: str = "tailor-cache", **extra: str) -> dict[str, str]:
    """This environment less what a tailor reads (TAILOR_*, DOCKER_*, CF_*, STAGING_*, the
    credential files' REGISTRY_AUTH_FILE and XDG_*), with its cache, DOCKER_CONFIG, HOME and
    XDG_RUNTIME_DIR under ``tmp``, and ``extra``."""
    prefixes = ("TAILOR_", "DOCKER_", "CF_", "STAGING_", "XDG_", "REGISTRY_AUTH_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["TAILOR_CACHE_DIR"] = str(tmp / cache)
    env["DOCKER_CONFIG"] = str(tmp / "docker-config")
    env["HOME"] = str(tmp / "home")
    env["XDG_RUNTIME_DIR"] = str(tmp / "xdg-runtime")
    env.update(extra)
    return env


def broker_settings(url: str, client: str, key: Path, token: str | None = None) -> dict[str, str]:
    """The variables that point a tailor at a broker (and hand it a staging token)."""
    env = {"TAILOR_BROKER_URL": url, "TAILOR_CLIENT_ID": client, "TAILOR_CLIENT_KEY": str(key)}
    if token:
        env["STAGING_TOKEN"] = token
    return env


def insecure(*hosts: str) -> list[str]:
    """``--insecure-registry HOST`` for each of ``hosts``."""
    return [arg for host in hosts for arg in ("--insecure-registry", host)]
