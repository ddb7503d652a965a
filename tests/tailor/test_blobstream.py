"""Verified, resumable blob streams against a real little HTTP server."""

from __future__ import annotations

import hashlib
import random
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tailor.blobstream import CHUNK, VerifiedBlobStream
from tailor.errors import DigestMismatch, SizeMismatch, TransportError
from tests.support.httpserver import reply, serve

BLOB = random.Random(3).randbytes(3 * CHUNK + 123)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def opener(host: str):
    def open_at(offset: int) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return requests.get(f"http://{host}/blob", headers=headers, stream=True, timeout=5)

    return open_at


def ranged(cut_first: int | None = None, honour_range: bool = True, wrong_offset: bool = False):
    """Serve BLOB; the first response is cut after ``cut_first`` bytes."""
    state = {"calls": 0}

    def handler(h: BaseHTTPRequestHandler) -> None:
        state["calls"] += 1
        start = 0
        rng = h.headers.get("Range")
        if rng and honour_range:
            start = int(rng[6:].rstrip("-"))
            shown = start + 1 if wrong_offset else start
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {shown}-{len(BLOB) - 1}/{len(BLOB)}")
        else:
            h.send_response(200)
        body = BLOB[start:]
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if state["calls"] == 1 and cut_first is not None:
            h.wfile.write(body[:cut_first])
            h.wfile.flush()
            h.connection.shutdown(2)
            h.close_connection = True
            return
        h.wfile.write(body)

    return handler, state


def collect(stream: VerifiedBlobStream) -> bytes:
    return b"".join(stream)


def test_whole_blob_streams_in_chunks() -> None:
    handler, _ = ranged()
    with serve(handler) as host:
        stream = VerifiedBlobStream(opener(host), DIGEST, len(BLOB))
        chunks = list(stream)
    assert b"".join(chunks) == BLOB
    assert max(len(c) for c in chunks) <= CHUNK
    assert len(stream) == len(BLOB) and stream.resumed == 0


@pytest.mark.parametrize("honour_range", [True, False])
def test_cut_download_resumes(honour_range: bool) -> None:
    handler, state = ranged(cut_first=CHUNK + 5000, honour_range=honour_range)
    with serve(handler) as host:
        stream = VerifiedBlobStream(opener(host), DIGEST, len(BLOB))
        assert collect(stream) == BLOB
    assert stream.resumed == 1 and state["calls"] == 2
    # With Range honoured, only the rest came again.
    if honour_range:
        assert stream.received == len(BLOB)


def test_resume_at_wrong_offset_is_refused() -> None:
    handler, _ = ranged(cut_first=1000, wrong_offset=True)
    with serve(handler) as host, pytest.raises(TransportError, match="wrong offset"):
        collect(VerifiedBlobStream(opener(host), DIGEST, len(BLOB)))


def test_resumes_are_bounded() -> None:
    def always_cut(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BLOB)))
        h.end_headers()
        h.wfile.write(BLOB[:100])
        h.wfile.flush()
        h.connection.shutdown(2)
        h.close_connection = True

    with serve(always_cut) as host, pytest.raises(TransportError, match="2 resume"):
        collect(VerifiedBlobStream(opener(host), DIGEST, len(BLOB), resumes=2))


def test_digest_mismatch_is_raised_before_the_last_chunk_is_handed_on() -> None:
    bad = bytearray(BLOB)
    bad[10] ^= 1

    def handler(h: BaseHTTPRequestHandler) -> None:
        reply(h, 200, bytes(bad))

    handed_on = 0
    with serve(handler) as host:
        stream = VerifiedBlobStream(opener(host), DIGEST, len(BLOB))
        with pytest.raises(DigestMismatch, match="digest mismatch"):
            for chunk in stream:
                handed_on += len(chunk)
    assert handed_on < len(BLOB)


def test_longer_blob_than_descriptor_is_refused() -> None:
    def handler(h: BaseHTTPRequestHandler) -> None:
        reply(h, 200, BLOB + b"x" * 10)

    with serve(handler) as host, pytest.raises(SizeMismatch):
        collect(VerifiedBlobStream(opener(host), DIGEST, len(BLOB) - 5))


def test_shorter_blob_than_descriptor_is_refused() -> None:
    def handler(h: BaseHTTPRequestHandler) -> None:
        reply(h, 200, BLOB)

    with serve(handler) as host, pytest.raises(TransportError):
        collect(VerifiedBlobStream(opener(host), DIGEST, len(BLOB) + 5, resumes=1))


def test_empty_blob() -> None:
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()

    def handler(h: BaseHTTPRequestHandler) -> None:
        reply(h, 200, b"")

    with serve(handler) as host:
        assert collect(VerifiedBlobStream(opener(host), empty, 0)) == b""
