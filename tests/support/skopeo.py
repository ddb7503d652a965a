"""skopeo, the independent client the tests check the tailor's copies with."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import markers
from tests.support.credentials import write_authfile
from tests.support.images import Layout
from tests.support.registry import Registry


class Skopeo:
    """Credentials go through an auth file, not argv."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.creds: dict[str, tuple[str, str]] = {}

    def login(self, registry: Registry) -> None:
        if registry.username:
            self.creds[registry.host] = (registry.username, registry.password)

    def run(self, *args: str, authfile: Path | None = None) -> str:
        """``skopeo ARGS`` with the logins' auth file, or with ``authfile`` (its only one)."""
        markers.require("registry", "skopeo")
        if authfile is None:
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

    def raw(self, ref: str, authfile: Path | None = None) -> bytes:
        args = ("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
        return self.run(*args, authfile=authfile).encode()

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
