"""The Go checksum database's verifier, as a peer that checks our transparency log.

``tests/support/go/tlogcheck`` is a small Go program on Debian's
``golang.org/x/mod/sumdb/note`` (signed notes) and ``.../tlog`` (RFC 6962 proofs),
built once per test session in GOPATH mode, offline. It answers one JSON line per
request (see the program's comment); :class:`GoTlog` wraps it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support import markers

SOURCE = Path(__file__).parent / "go" / "tlogcheck" / "main.go"
GOPATH = "/usr/share/gocode"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def build(into: Path) -> Path:
    """Compile the verifier into ``into`` (Debian's golang-go and golang-golang-x-mod-dev)."""
    markers.require("slow", "the Go verifier")
    go = shutil.which("go")
    if go is None or not (Path(GOPATH) / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        raise AssertionError("the Go verifier needs golang-go and golang-golang-x-mod-dev")
    into.mkdir(parents=True, exist_ok=True)
    binary = into / "tlogcheck"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(into),
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(into / "cache"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    out = subprocess.run(
        [go, "build", "-o", str(binary), str(SOURCE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"go build failed: {out.stderr.strip()}")
    return binary


class GoTlog:
    """One running verifier: ask it, one request at a time."""

    def __init__(self, binary: Path) -> None:
        self._proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise AssertionError("the Go verifier exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    @staticmethod
    def _error(answer: dict[str, Any]) -> str | None:
        return None if answer.get("ok") else str(answer.get("error") or "refused")

    def open_note(self, vkey: str, note: bytes | str) -> str:
        """The note's text, when ``vkey``'s signature on it verifies; else AssertionError."""
        text = note.decode() if isinstance(note, bytes) else note
        answer = self.ask(op="note", vkey=vkey, note=text)
        if not answer.get("ok"):
            raise AssertionError(f"the Go verifier refused the note: {answer.get('error')}")
        return str(answer["text"])

    def note_error(self, vkey: str, note: bytes | str) -> str | None:
        """None when the note verifies, else Go's reason."""
        text = note.decode() if isinstance(note, bytes) else note
        return self._error(self.ask(op="note", vkey=vkey, note=text))

    def inclusion_error(
        self, index: int, size: int, root: bytes, leaf_hash: bytes, proof: Sequence[bytes]
    ) -> str | None:
        """None when ``proof`` proves leaf ``index`` in the tree of ``size`` with ``root``."""
        return self._error(
            self.ask(
                op="inclusion",
                index=index,
                size=size,
                root=_b64(root),
                leaf=_b64(leaf_hash),
                proof=[_b64(p) for p in proof],
            )
        )

    def consistency_error(
        self, size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
    ) -> str | None:
        """None when ``proof`` proves the tree of ``size2`` extends the one of ``size1``."""
        return self._error(
            self.ask(
                op="consistency",
                size1=size1,
                size2=size2,
                root1=_b64(root1),
                root2=_b64(root2),
                proof=[_b64(p) for p in proof],
            )
        )

    def record_hash(self, data: bytes) -> bytes:
        """RFC 6962's leaf hash of ``data``, as Go computes it."""
        answer = self.ask(op="record_hash", data=_b64(data))
        assert answer.get("ok"), answer
        return base64.b64decode(answer["hash"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
