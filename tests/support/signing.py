"""GnuPG keys a test makes, and simple-signing signatures in lookaside storage, made by
skopeo itself (``copy --sign-by``, ``standalone-sign``) as containers-signature(5) says.

Each :class:`GnuPG` has a home of its own under /tmp with a short name (gpg-agent's socket
paths have a length limit), its keys made without a passphrase (``%no-protection``); on
:meth:`GnuPG.close` its agent is killed and the home removed. Private key material never
leaves that home: the tests get public keys (:meth:`GnuPG.export`) and fingerprints, and
:meth:`GnuPG.secrets` says what to scan outputs for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import markers

GPG_TIMEOUT = 60
SKOPEO_TIMEOUT = 120
_SECRET = re.compile(rb"\(d\s+#([0-9A-Fa-f\s]+)#\)")
"""The private scalar or exponent in gpg-agent's extended key format (private-keys-v1.d)."""


@dataclass(frozen=True)
class Key:
    """A primary key that signs (no subkeys: containers/image 5.23 trusts primary
    fingerprints only)."""

    name: str
    fingerprint: str


class GnuPG:
    """A GNUPGHOME of the test's own, under /tmp with a short path."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
        self.home.chmod(0o700)

    def env(self) -> dict[str, str]:
        """This environment with GNUPGHOME at this home (for gpg, and skopeo when it signs)."""
        env = {k: v for k, v in os.environ.items() if k not in ("GNUPGHOME", "GPG_AGENT_INFO")}
        env["GNUPGHOME"] = str(self.home)
        return env

    def gpg(self, *args: str, stdin: bytes | None = None) -> bytes:
        out = subprocess.run(
            ["gpg", "--batch", "--no-tty", *args],
            input=stdin,
            capture_output=True,
            env=self.env(),
            timeout=GPG_TIMEOUT,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"gpg {args[0]} failed: {out.stderr.decode(errors='replace')}")
        return out.stdout

    def generate(self, name: str, *, algorithm: str = "ed25519") -> Key:
        """A new signing key ``name <name@example.test>``, no passphrase, no expiry:
        ``ed25519`` or ``rsa`` (2048 bits)."""
        if algorithm == "ed25519":
            kind = "Key-Type: eddsa\nKey-Curve: ed25519\n"
        elif algorithm == "rsa":
            kind = "Key-Type: RSA\nKey-Length: 2048\n"
        else:
            raise ValueError(f"no such algorithm {algorithm!r}")
        params = (
            f"%no-protection\n{kind}Key-Usage: sign\nName-Real: {name}\n"
            f"Name-Email: {name}@example.test\nExpire-Date: 0\n%commit\n"
        )
        self.gpg("--gen-key", stdin=params.encode())
        return Key(name, self.fingerprint(name))

    def fingerprint(self, name: str) -> str:
        """The primary key's fingerprint (uppercase hex) of the one key named ``name``."""
        listing = self.gpg("--with-colons", "--list-keys", f"<{name}@example.test>").decode()
        fprs: list[str] = []
        after_pub = False
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] in ("pub", "sub"):
                after_pub = fields[0] == "pub"
            elif fields[0] == "fpr" and after_pub:
                fprs.append(fields[9])
                after_pub = False
        assert len(fprs) == 1, f"{len(fprs)} keys named {name}"
        return fprs[0]

    def export(self, key: Key, *, armor: bool = False) -> bytes:
        """The public key, binary or ASCII-armoured."""
        data = self.gpg(*(["--armor"] if armor else []), "--export", key.fingerprint)
        assert data, f"nothing exported for {key.name}"
        if not armor:
            # A public key packet (tag 6, old or new format), never a secret key one (tag 5).
            assert data[0] in (0x98, 0x99, 0x9A, 0xC6), hex(data[0])
        else:
            assert data.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        return data

    def secrets(self) -> list[bytes]:
        """The private parts of this home's keys, as hex (upper and lower case) and as raw
        bytes: what no output and no file outside the home may hold."""
        out: list[bytes] = []
        for path in sorted((self.home / "private-keys-v1.d").glob("*.key")):
            for match in _SECRET.finditer(path.read_bytes()):
                hexed = re.sub(rb"\s+", b"", match.group(1))
                out += [hexed.upper(), hexed.lower(), bytes.fromhex(hexed.decode())]
        assert out, "no private keys found"
        return out

    def daemons(self) -> list[int]:
        """The processes (gpg-agent, dirmngr) serving this home, by their command line."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(self.home).encode() in argv:
                pids.append(int(proc.name))
        return pids

    def close(self, timeout: float = 10) -> None:
        """Kill this home's gpg-agent (and whatever else gpgconf started), wait until they
        are gone, and remove the home."""
        try:
            for daemon in ("gpg-agent", "dirmngr"):
                subprocess.run(
                    ["gpgconf", "--kill", daemon],
                    env=self.env(),
                    capture_output=True,
                    timeout=GPG_TIMEOUT,
                    check=False,
                )
            deadline = time.monotonic() + timeout
            while (left := self.daemons()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not left, f"gpg daemons of {self.home} still running: {left}"
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def gnupg() -> Iterator[GnuPG]:
    """A :class:`GnuPG`, closed on leaving."""
    home = GnuPG()
    try:
        yield home
    finally:
        home.close()


def lookaside_path(base: Path, repository: str, digest: str, n: int = 1) -> Path:
    """Where signature ``n`` (from 1) of manifest ``digest`` in ``repository`` (its path
    without the host) lies under the lookaside directory ``base``."""
    algo, _, hexd = digest.partition(":")
    return base / f"{repository}@{algo}={hexd}" / f"signature-{n}"


def signatures_of(base: Path, repository: str, digest: str) -> list[Path]:
    """The signature files, in order, as a reader finds them (it stops at the first gap)."""
    out: list[Path] = []
    while (path := lookaside_path(base, repository, digest, len(out) + 1)).exists():
        out.append(path)
    return out


def write_registries_d(
    directory: Path, scope: str, *, lookaside: str | None = None, staging: str | None = None
) -> Path:
    """``directory``/sigs.yaml naming the lookaside of the docker scope ``scope`` (a
    registry ``host:port``, or a namespace under it): ``lookaside`` to read (and write),
    ``staging`` to write (``lookaside-staging``)."""
    section: dict[str, str] = {}
    if lookaside:
        section["lookaside"] = lookaside
    if staging:
        section["lookaside-staging"] = staging
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sigs.yaml").write_text(json.dumps({"docker": {scope: section}}))  # JSON is YAML
    return directory


def skopeo_env(gpg: GnuPG, home: Path) -> dict[str, str]:
    """The signing skopeo's environment: ``gpg``'s GNUPGHOME, ``home`` as HOME (no
    containers configuration of the machine user's)."""
    env = gpg.env()
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("REGISTRY_AUTH_FILE", None)
    return env


def _skopeo(args: list[str], env: dict[str, str]) -> str:
    markers.require("registry", "skopeo")
    out = subprocess.run(
        ["skopeo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SKOPEO_TIMEOUT,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def sign_copy(
    gpg: GnuPG,
    key: Key | None,
    source: str,
    dest: str,
    registries_d: Path,
    *,
    home: Path,
    all_platforms: bool = False,
) -> None:
    """``skopeo copy --sign-by`` ``source`` (any transport) to ``docker://dest`` (plain
    HTTP), its signature (identity: ``dest``) stored where ``registries_d`` says; with no
    ``key``, an unsigned copy. With ``all_platforms`` an index is copied whole (``--all``)."""
    args = ["--insecure-policy", "--registries.d", str(registries_d), "copy", "--quiet"]
    args.append("--dest-tls-verify=false")
    if key is not None:
        args += ["--sign-by", key.fingerprint]
    if all_platforms:
        args.append("--all")
    _skopeo([*args, source, f"docker://{dest}"], skopeo_env(gpg, home))


def standalone_sign(
    gpg: GnuPG, key: Key, manifest: bytes, identity: str, out: Path, *, home: Path
) -> Path:
    """``skopeo standalone-sign``: a signature by ``key`` claiming that ``manifest`` (its
    sha256) is ``identity``, written to ``out`` (its directories made)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="manifest-", dir=home))
    try:
        (work / "manifest.json").write_bytes(manifest)
        args = ["standalone-sign", str(work / "manifest.json"), identity, key.fingerprint]
        _skopeo([*args, "--output", str(out)], skopeo_env(gpg, home))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
