"""The secrets the tests hand out, and the checks that they never leak into outputs."""

from __future__ import annotations

import base64
import json
import shlex
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


NOT_FOUND = "credentials not found in native keychain"  # the helper protocol's answer


def write_helper(
    bin_dir: Path, name: str, answers: dict[str, tuple[str, str]], log: Path | None = None
) -> Path:
    """A real ``docker-credential-NAME`` in ``bin_dir`` (put it on PATH): ``get`` answers
    ``server -> (Username, Secret)`` from ``answers`` and "credentials not found" for any
    other server; every server it is asked for is appended to ``log`` (if given)."""
    cases = "".join(
        f"  {shlex.quote(server)}) printf '%s\\n' "
        f"{shlex.quote(json.dumps({'ServerURL': server, 'Username': u, 'Secret': p}))} ;;\n"
        for server, (u, p) in answers.items()
    )
    logging = f"printf '%s\\n' \"$server\" >> {shlex.quote(str(log))}\n" if log else ""
    script = (
        "#!/bin/sh\n"
        '[ "$1" = get ] || { echo "only get"; exit 1; }\n'
        "read -r server\n"
        f"{logging}"
        'case "$server" in\n'
        f"{cases}"
        f"  *) echo {shlex.quote(NOT_FOUND)}; exit 1 ;;\n"
        "esac\n"
    )
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(script)
    path.chmod(0o755)
    return path
