"""The secrets the tests hand out, and the checks that they never leak into outputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Protocol

UPSTREAM_USER = "pusher"
UPSTREAM_PASSWORD = "upstream-S3cret-pw-7781"  # the private upstream's: scanned for in outputs
PASSWORD = "registry-pw-Zq81-never-logged"  # the one the in-process broker tests seal


class Output(Protocol):
    stdout: str
    stderr: str
    argv: list[str]


def assert_no_secret(run: Output, *secrets: str) -> None:
    """None of ``secrets`` on the command's stdout, stderr or command line."""
    for secret in secrets:
        assert secret not in run.stdout
        assert secret not in run.stderr
        assert all(secret not in a for a in run.argv)


def files_holding(root: Path, secret: str, skip: tuple[str, ...] = ()) -> list[Path]:
    """Every file below ``root`` (but under a folder named in ``skip``) holding ``secret``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not any(part in skip for part in path.parts):
            try:
                if secret.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


def write_authfile(path: Path, entries: dict[str, tuple[str, str]]) -> Path:
    """A Docker/containers auth file (``{"auths": ...}``) for ``host -> (user, password)``."""
    auths = {
        host: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
        for host, (u, p) in entries.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path
