"""A witness of the audit log (c2sp.org/tlog-cosignature, Ed25519 v1), run by someone
other than the broker's operator: ``broker audit witness``.

Each round it fetches the log's newest checkpoint (``GET /v1/audit/checkpoint``) and
checks the log's signature on it with the log's verifier key (pinned with
``--log-key``; otherwise fetched from ``GET /v1/audit/log-key`` on first use and kept in
the state file: trust on first use). If it cosigned a checkpoint before, the new one
must extend it: the same size with the same root, or a larger size with a consistency
proof (``GET /v1/audit/proofs/consistency``) that verifies. A smaller size, the same
size with another root, or a proof that fails is the log showing a history other than
the one the witness vouched for (a fork, a rollback, a rewrite): the witness refuses
(:class:`Misbehaved`), never cosigns, and keeps its state. Otherwise it cosigns the
checkpoint with the time now, writes its state (atomically, *before* the cosignature
leaves: a witness must not forget what it signed) and posts the cosignature
(``POST /v1/audit/cosignatures``).

The state file is JSON: ``{"version": 1, "origin": ..., "size": N, "root": base64,
"cosigned_at": POSIX seconds, "log_keys": [vkeys]}``, the last checkpoint cosigned and
the log keys trusted. It is what keeps the witness from cosigning a fork: it is never
reset silently (an unreadable one stops the witness).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from broker.audit.checkpoints import LogIdentity
from broker.audit.merkle import ProofError, verify_consistency
from broker.audit.note import (
    ALG_ED25519,
    MAX_NOTE_BYTES,
    MAX_PROOF_HASHES,
    Checkpoint,
    Cosigner,
    NoteError,
    cosign,
)
from broker.errors import SetupError

__all__ = [
    "BrokerHttp",
    "Cosigned",
    "Misbehaved",
    "RoundFailed",
    "State",
    "StateFile",
    "Witness",
]

_ATTEMPTS = 3  # a round tries again when the log replaced the checkpoint meanwhile
_MAX_ANSWER = 64 * 1024


class Misbehaved(Exception):
    """The log showed what a witness must never cosign: a fork, a rollback, a rewrite, a
    checkpoint its key did not sign. The message is one line naming it."""


class RoundFailed(Exception):
    """A round did not complete (the broker unreachable or refusing); the next may."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class State:
    """The last checkpoint this witness cosigned, and the log keys it trusts."""

    origin: str
    size: int
    root: bytes
    cosigned_at: int
    log_keys: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "origin": self.origin,
            "size": self.size,
            "root": _b64(self.root),
            "cosigned_at": self.cosigned_at,
            "log_keys": list(self.log_keys),
        }

    @classmethod
    def from_json(cls, data: Any) -> State:
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not version 1")
        keys = data["log_keys"]
        size, cosigned_at = data["size"], data["cosigned_at"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("log_keys is not a list of verifier keys")
        if not isinstance(size, int) or size < 1 or not isinstance(cosigned_at, int):
            raise ValueError("size or cosigned_at is not a number")
        root = base64.b64decode(str(data["root"]), validate=True)
        if len(root) != 32:
            raise ValueError("root is not a 32-byte hash")
        return cls(str(data["origin"]), size, root, cosigned_at, tuple(keys))


class StateFile:
    """The witness's state, in one file written atomically (a temporary file, fsync,
    rename, fsync of the folder), used by one witness at a time (a lock file beside it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> State | None:
        """The state, or None before the first cosignature (no file)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise SetupError(f"cannot read the witness state {self.path}: {exc}") from None
        try:
            return State.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise SetupError(
                f"{self.path} is not a witness state file ({exc}); it is what keeps this"
                " witness from cosigning a fork: restore it rather than delete it"
            ) from None

    def save(self, state: State) -> None:
        data = json.dumps(state.as_json(), indent=1, sort_keys=True) + "\n"
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            with os.fdopen(os.open(temporary, flags, 0o600), "w") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise SetupError(
                f"cannot write the witness state {self.path}: {exc.strerror}"
            ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SetupError(f"cannot open {lock}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SetupError(f"another witness is using {self.path}") from None
            yield
        finally:
            os.close(fd)


class Http(Protocol):
    def get(self, path: str, limit: int) -> tuple[int, bytes]: ...

    def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...


class BrokerHttp:
    """The broker's public audit endpoints, over HTTP(S)."""

    def __init__(self, base: str, timeout: float = 10) -> None:
        if not base.startswith(("https://", "http://")):
            raise SetupError(f"--broker must be an http(s) URL, not {base[:100]!r}")
        self.base = base.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()

    def _read(self, answer: requests.Response, limit: int) -> bytes:
        data = answer.raw.read(limit + 1, decode_content=True)
        if len(data) > limit:
            raise RoundFailed(f"the broker's answer is larger than {limit} bytes")
        return bytes(data)

    def _unreachable(self, exc: Exception) -> RoundFailed:
        return RoundFailed(f"cannot reach the broker at {self.base}: {type(exc).__name__}")

    def get(self, path: str, limit: int) -> tuple[int, bytes]:
        try:
            with self._session.get(self.base + path, timeout=self._timeout, stream=True) as r:
                return r.status_code, self._read(r, limit)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        try:
            with self._session.post(
                self.base + path, data=body, headers=headers, timeout=self._timeout, stream=True
            ) as r:
                return r.status_code, self._read(r, _MAX_ANSWER)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None


def _detail(answer: bytes) -> str:
    """A problem's detail (or title), for a message: one line, bounded."""
    try:
        data = json.loads(answer)
        text = str(data.get("detail") or data.get("title") or "")
    except (ValueError, AttributeError):
        text = answer[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


@dataclass(frozen=True)
class Cosigned:
    """A round's result: the checkpoint cosigned, when, what it extends, and whether
    the broker kept the cosignature (False: it had as new a one already)."""

    checkpoint: Checkpoint
    cosigned_at: int
    previous: int | None
    kept: bool

    def describe(self) -> str:
        cp = self.checkpoint
        text = f"cosigned checkpoint {cp.size} of {cp.origin} (root {_b64(cp.root)})"
        if self.previous is None:
            text += ", the first this witness cosigned"
        elif self.previous == cp.size:
            text += ", again"
        else:
            text += f", consistent with checkpoint {self.previous} cosigned before"
        return text if self.kept else text + " (the broker had it already)"


class _Replaced(Exception):
    """The log replaced the checkpoint with a newer one before the cosignature arrived."""


class Witness:
    def __init__(
        self,
        cosigner: Cosigner,
        http: Http,
        state: StateFile,
        log_keys: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.time,
        warn: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.cosigner = cosigner
        self._http = http
        self._state = state
        self._log_keys = tuple(k.strip() for k in log_keys if k.strip())
        self._clock = clock
        self._warn = warn

    def round(self) -> Cosigned:
        """One round: fetch, check, cosign, save, post. Misbehaved, RoundFailed, or
        SetupError (the witness's own set-up: keys, state file)."""
        with self._state.locked():
            for _ in range(_ATTEMPTS):
                try:
                    return self._round()
                except _Replaced:
                    continue
        raise RoundFailed(
            f"the log replaced the checkpoint before each of {_ATTEMPTS} cosignatures arrived"
        )

    def _identity(self, state: State | None) -> tuple[LogIdentity, tuple[str, ...]]:
        vkeys = self._log_keys or (state.log_keys if state is not None else ())
        if not vkeys:
            status, text = self._http.get("/v1/audit/log-key", _MAX_ANSWER)
            if status != 200:
                raise RoundFailed(f"cannot get the log's key: HTTP {status}")
            vkeys = tuple(line.strip() for line in text.decode(errors="replace").splitlines())
            vkeys = tuple(v for v in vkeys if v)
            self._warn(
                "trusting the log key the broker serves now (trust on first use; it is kept in"
                " the state file): pin the key the operator published with --log-key instead"
            )
        try:
            identity = LogIdentity.from_vkeys(list(vkeys))
        except NoteError as exc:
            raise SetupError(f"bad log key: {exc}") from None
        if any(v.alg != ALG_ED25519 for v in identity.verifiers):
            raise SetupError("bad log key: a log's verifier key has signature type 0x01")
        if state is not None and state.origin != identity.origin:
            raise SetupError(
                f"the state file is for the log {state.origin}, the log key for"
                f" {identity.origin}: use another state file for another log"
            )
        return identity, tuple(identity.vkeys())

    def _round(self) -> Cosigned:
        state = self._state.load()
        identity, vkeys = self._identity(state)
        status, note = self._http.get("/v1/audit/checkpoint", MAX_NOTE_BYTES)
        if status != 200:
            raise RoundFailed(f"cannot get the log's checkpoint: HTTP {status}: {_detail(note)}")
        try:
            checkpoint = identity.open(note).checkpoint
        except NoteError as exc:
            raise Misbehaved(
                f"the log's checkpoint does not verify with the log's key: {exc}"
            ) from None
        if state is not None:
            self._extends(state, checkpoint)
        now = int(self._clock())
        line = cosign(checkpoint.body(), self.cosigner, now)
        # Saved before the cosignature leaves: the witness never forgets what it signed.
        self._state.save(State(checkpoint.origin, checkpoint.size, checkpoint.root, now, vkeys))
        body = (checkpoint.body() + "\n" + line).encode()
        status, answer = self._http.post("/v1/audit/cosignatures", body)
        if status == 409:
            raise _Replaced
        if status != 200:
            raise RoundFailed(
                f"the broker refused the cosignature of checkpoint {checkpoint.size}:"
                f" HTTP {status}: {_detail(answer)}"
            )
        try:
            kept = all(bool(c["kept"]) for c in json.loads(answer)["cosignatures"])
        except (ValueError, KeyError, TypeError):
            kept = True
        previous = state.size if state is not None else None
        return Cosigned(checkpoint, now, previous, kept)

    def _extends(self, state: State, new: Checkpoint) -> None:
        """``new`` extends the checkpoint cosigned before, or Misbehaved."""
        old_root, new_root = _b64(state.root), _b64(new.root)
        if new.size < state.size:
            raise Misbehaved(
                f"rollback: the log's newest checkpoint has {new.size} events, fewer than the"
                f" {state.size} (root {old_root}) this witness cosigned"
            )
        if new.size == state.size:
            if new.root != state.root:
                raise Misbehaved(
                    f"fork: the log's checkpoint {new.size} has root {new_root}, but this"
                    f" witness cosigned root {old_root} at that size"
                )
            return
        query = f"/v1/audit/proofs/consistency?from={state.size}&to={new.size}"
        status, text = self._http.get(query, _MAX_ANSWER)
        if status != 200:
            raise RoundFailed(
                f"no consistency proof from {state.size} to {new.size}: HTTP {status}:"
                f" {_detail(text)}"
            )
        try:
            lines = text.decode("ascii").splitlines()
            proof = [base64.b64decode(line, validate=True) for line in lines]
        except (UnicodeDecodeError, binascii.Error):
            raise RoundFailed("the broker's consistency proof is not base64 hashes") from None
        if len(proof) > MAX_PROOF_HASHES or any(len(h) != 32 for h in proof):
            raise RoundFailed("the broker's consistency proof is not a list of 32-byte hashes")
        try:
            verify_consistency(state.size, new.size, state.root, new.root, proof)
        except ProofError:
            raise Misbehaved(
                f"fork: the log's checkpoint {new.size} (root {new_root}) does not extend"
                f" checkpoint {state.size} (root {old_root}) this witness cosigned: the"
                " consistency proof fails"
            ) from None
