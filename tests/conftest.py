"""Fixtures: real Distribution registries, a token server, skopeo, and the tailor command."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support.images import Layout
from tests.support.registry import Registry, start_registry
from tests.support.tokenserver import TokenServer

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_USER = "pusher"
UPSTREAM_PASSWORD = "upstream-S3cret-pw-7781"  # scanned for in every output below


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A real PostgreSQL: BROKER_TEST_DATABASE_URL, or the local one set up by .ci/postgres.sh."""
    url = os.environ.get("BROKER_TEST_DATABASE_URL")
    if not url:
        out = subprocess.run(
            ["bash", str(ROOT / ".ci" / "postgres.sh")], capture_output=True, text=True, check=True
        )
        url = out.stdout.strip().splitlines()[-1]
    return url


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A fresh schema per test, reached through search_path."""
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"
    yield f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def internal(tmp_path: Path) -> Iterator[Registry]:
    """The platform's internal registry: no auth."""
    reg = start_registry(tmp_path / "internal")
    yield reg
    reg.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Registry]:
    """A private upstream registry with htpasswd (Basic) auth."""
    reg = start_registry(tmp_path / "upstream", htpasswd=(UPSTREAM_USER, UPSTREAM_PASSWORD))
    yield reg
    reg.stop()


@dataclass
class TokenRegistry:
    registry: Registry
    server: TokenServer


@pytest.fixture
def token_upstream(tmp_path: Path) -> Iterator[TokenRegistry]:
    """A private upstream registry with token auth, and its token server."""
    server = TokenServer(UPSTREAM_USER, UPSTREAM_PASSWORD, tmp_path / "tokens")
    reg = start_registry(tmp_path / "token-upstream", token=server.registry_auth())
    reg.username, reg.password = UPSTREAM_USER, UPSTREAM_PASSWORD
    yield TokenRegistry(reg, server)
    reg.stop()
    server.stop()


def write_authfile(path: Path, entries: dict[str, tuple[str, str]]) -> Path:
    auths = {
        host: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
        for host, (u, p) in entries.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


class Skopeo:
    """skopeo, the independent client; credentials go through an auth file, not argv."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.creds: dict[str, tuple[str, str]] = {}

    def login(self, registry: Registry) -> None:
        if registry.username:
            self.creds[registry.host] = (registry.username, registry.password)

    def run(self, *args: str) -> str:
        authfile = write_authfile(self.workdir / "skopeo-auth.json", self.creds)
        out = subprocess.run(
            ["skopeo", *args[:1], "--authfile", str(authfile), *args[1:]],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"skopeo {args[0]} failed: {out.stderr.strip()}")
        return out.stdout

    def push(
        self,
        layout: Layout,
        tag: str,
        dest: str,
        *,
        all_platforms: bool = True,
        docker_format: bool = False,
    ) -> None:
        args = ["copy", "--dest-tls-verify=false", "--quiet"]
        if all_platforms:
            args.append("--all")
        if docker_format:
            args += ["--format", "v2s2"]
        self.run(*args, f"oci:{layout.path}:{tag}", f"docker://{dest}")

    def raw(self, ref: str) -> bytes:
        return self.run("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").encode()

    def pull(self, ref: str, into: Path) -> Path:
        self.run(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--quiet",
            f"docker://{ref}",
            f"oci:{into}:pulled",
        )
        return into


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path / "skopeo")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]


@pytest.fixture
def tailor_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAILOR_", "DOCKER_"))}
    env["TAILOR_CACHE_DIR"] = str(tmp_path / "tailor-cache")
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    env["HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture
def tailor(tailor_env: dict[str, str]):
    """Run the real ``tailor`` command in a subprocess."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
        argv = [sys.executable, "-m", "tailor.cli", *args]
        merged = {**tailor_env, **(env or {})}
        out = subprocess.run(
            argv, capture_output=True, text=True, env=merged, timeout=timeout, check=False
        )
        return Run(out.returncode, out.stdout, out.stderr, argv)

    return run


def assert_no_secret(run: Run, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in run.stdout
        assert secret not in run.stderr
        assert all(secret not in a for a in run.argv)
