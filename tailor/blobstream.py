"""A blob download as an upload body: verified as bytes pass, resumed with Range when cut.

Memory stays at one chunk whatever the blob size. The size is enforced on every
chunk and the sha256 is checked before the last chunk is handed on, so a corrupt
blob never reaches the destination in full.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator

import requests
import urllib3.exceptions

from tailor.errors import DigestMismatch, SizeMismatch, TransportError

__all__ = ["CHUNK", "VerifiedBlobStream"]

CHUNK = 1024 * 1024
_READ_ERRORS = (
    urllib3.exceptions.HTTPError,
    requests.RequestException,
    OSError,
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Opener = Callable[[int], requests.Response]


class VerifiedBlobStream:
    """Iterate a blob's bytes; ``open(offset)`` returns a streaming GET from ``offset``."""

    def __init__(
        self,
        open: Opener,
        digest: str,
        size: int,
        *,
        resumes: int = 5,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        if not digest.startswith("sha256:"):
            raise DigestMismatch(f"unsupported digest algorithm in {digest}")
        self._open = open
        self._digest = digest
        self._size = size
        self._resumes = resumes
        self._on_bytes = on_bytes
        self.resumed = 0
        self.received = 0

    def __len__(self) -> int:
        # requests sends Content-Length from this instead of chunked encoding.
        return self._size

    def _start(self, offset: int) -> tuple[requests.Response, int]:
        """Open at ``offset``; returns the response and how many leading bytes to skip."""
        response = self._open(offset)
        if offset == 0:
            return response, 0
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match and int(match.group(1)) == offset:
                return response, 0
            response.close()
            raise TransportError(f"blob {self._digest[:19]}: server resumed at the wrong offset")
        # A 200 means the server ignored Range: read past what we already have.
        return response, offset

    def __iter__(self) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        offset = 0
        response, skip = self._start(0)
        try:
            while True:
                try:
                    chunk = response.raw.read(CHUNK, decode_content=False)
                except _READ_ERRORS:
                    chunk = None
                if chunk is None or (not chunk and offset < self._size):
                    # Cut mid-blob (or closed early): reopen where we stopped.
                    response.close()
                    if self.resumed >= self._resumes:
                        raise TransportError(
                            f"blob {self._digest[:19]}: download cut at {offset} of "
                            f"{self._size} bytes, {self.resumed} resume(s) failed"
                        )
                    self.resumed += 1
                    response, skip = self._start(offset)
                    continue
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                if not chunk:
                    break
                offset += len(chunk)
                self.received += len(chunk)
                if offset > self._size:
                    raise SizeMismatch(
                        f"blob {self._digest}: more than the {self._size} bytes its descriptor says"
                    )
                hasher.update(chunk)
                if offset == self._size:
                    self._check(hasher)
                if self._on_bytes:
                    self._on_bytes(len(chunk))
                yield chunk
                if offset == self._size:
                    break
            if offset != self._size:
                raise SizeMismatch(f"blob {self._digest}: {offset} bytes, expected {self._size}")
            if self._size == 0:
                self._check(hasher)
        finally:
            response.close()

    def _check(self, hasher: hashlib._Hash) -> None:
        actual = "sha256:" + hasher.hexdigest()
        if actual != self._digest:
            raise DigestMismatch(f"digest mismatch: blob {self._digest} has content {actual}")
