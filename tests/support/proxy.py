"""A counting, fault-injecting reverse proxy in front of a real registry (test-only).

It forwards every request unchanged (Host included, so the registry's Location
headers point back at the proxy), counts blob downloads, and on request cuts a
blob download half-way, flips a byte in one, answers with retryable errors, fails
blob upload PUTs with a 502, redirects blob GETs to a separate "storage" host, or holds
each successful answer for a manifest or blob back for a while (a slow pull). A header
sent several times (as containers/image sends ``Accept``) is forwarded as many times.

With ``referrers_api`` set it also answers the OCI 1.1 Referrers API, ``GET
/v2/NAME/referrers/DIGEST[?artifactType=T]``, which Debian's Distribution 2.8.2 lacks (it
answers 404): from the registry's own referrers tag ``sha256-HEX`` (200 with an empty index
when there is none, as the API must), so a test can have a source that has the API. With
``oci_subject`` set it answers the PUT of a manifest that has a ``subject`` with the
``OCI-Subject`` header, as a registry that processed the subject does.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_BLOB_GET = re.compile(r"^/v2/(.+)/blobs/(sha256:[a-f0-9]{64})$")
_REFERRERS = re.compile(r"^/v2/(.+)/referrers/sha256:([a-f0-9]{64})$")
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_SLOWED = re.compile(r"^/v2/.+/(blobs|manifests)/[^/]+$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


@dataclass
class Faults:
    cut_once: set[str] = field(default_factory=set)  # digests: cut the first download mid-way
    corrupt: set[str] = field(default_factory=set)  # digests: flip one byte, every time
    statuses: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # served first
    redirect_to: str | None = None  # "http://host:port": 307 blob GETs there
    fail_paths: set[str] = field(default_factory=set)  # path substrings: always 500
    fail_upload_puts: int = 0  # swallow this many blob upload PUTs, then answer 502
    slow: float = 0.0  # seconds to hold back a manifest's or blob's successful answer
    slow_blobs: float = 0.0  # seconds to hold back a blob's successful answer (not manifests)
    slow_once: dict[str, float] = field(default_factory=dict)  # path regex: hold back once


class Proxy:
    def __init__(self, backend: str, host: str = "127.0.0.1") -> None:
        self.backend = backend
        self.faults = Faults()
        self.blob_gets: Counter[str] = Counter()
        self.blob_bytes = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.ranges: list[str] = []
        self.answered: list[tuple[str, str, int]] = []  # method, path, the registry's status
        self.referrers_api = False  # answer GET .../referrers/DIGEST (see the docstring)
        self.referrer_gets: list[str] = []  # the paths of the Referrers API requests answered
        self.oci_subject = False  # say OCI-Subject on a manifest PUT with a subject
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as Distribution (Go) has: the head and the body go out in two
            # writes, and with Nagle the body of a small answer waited for the client's
            # delayed ACK, adding 40 ms to each (a manifest GET of a warm re-stage).
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_GET
            do_PUT = do_GET
            do_POST = do_GET
            do_PATCH = do_GET
            do_DELETE = do_GET

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in _HOP]
        with self._lock:
            self.requests.append((h.command, h.path, dict(h.headers.items())))
            injected = self.faults.statuses.pop(0) if self.faults.statuses else None
        if injected is None and any(part in h.path for part in self.faults.fail_paths):
            injected = (500, {})
        if injected:
            status, extra = injected
            h.send_response(status)
            for k, v in extra.items():
                h.send_header(k, v)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        api = _REFERRERS.match(unquote(path)) if self.referrers_api and h.command == "GET" else None
        if api:
            self._referrers(h, headers, api.group(1), api.group(2))
            return
        body = None
        length = h.headers.get("Content-Length")
        if length:
            body = h.rfile.read(int(length))
        elif h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(h)
        if h.command == "PUT" and "/blobs/uploads/" in path and self._take_upload_failure():
            # As a load balancer does when the replica behind it dies after the body was sent.
            h.send_response(502)
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.close_connection = True
            h.end_headers()
            return
        blob = _BLOB_GET.match(path) if h.command == "GET" else None
        if blob and self.faults.redirect_to:
            h.send_response(307)
            h.send_header("Location", f"{self.faults.redirect_to}/storage/{blob.group(2)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        conn = http.client.HTTPConnection(self.backend, timeout=60)
        _send(conn, h.command, h.path, headers, body)
        resp = conn.getresponse()
        with self._lock:
            self.answered.append((h.command, h.path, resp.status))
        if self.faults.slow and resp.status < 300 and _SLOWED.match(path):
            time.sleep(self.faults.slow)  # after the registry checked the request
        if self.faults.slow_blobs and resp.status < 300 and blob is not None:
            time.sleep(self.faults.slow_blobs)
        if resp.status < 300 and (held := self._take_slow_once(path)):
            time.sleep(held)
        digest = blob.group(2) if blob and resp.status in (200, 206) else None
        if digest:
            with self._lock:
                self.blob_gets[digest] += 1
                if "Range" in h.headers:
                    self.ranges.append(h.headers["Range"])
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                h.send_header(k, v)
        subject = _subject(body) if self.oci_subject and h.command == "PUT" else None
        if subject and "/manifests/" in path and resp.status == 201:
            h.send_header("OCI-Subject", subject)
        if resp.getheader("Content-Length") is None and h.command != "HEAD":
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command == "HEAD":
            conn.close()
            return
        cut = False
        if digest:
            with self._lock:
                cut = digest in self.faults.cut_once
                self.faults.cut_once.discard(digest)
        self._pipe(h, resp, digest, cut)
        conn.close()

    def _referrers(
        self, h: BaseHTTPRequestHandler, headers: list[tuple[str, str]], name: str, hexd: str
    ) -> None:
        """The Referrers API, from the registry's referrers tag (with the client's own
        credentials, so a registry with auth answers as it would to the client)."""
        with self._lock:
            self.referrer_gets.append(h.path)
        forwarded = [(k, v) for k, v in headers if k.lower() not in ("accept", "content-length")]
        forwarded.append(("Accept", _OCI_INDEX))
        conn = http.client.HTTPConnection(self.backend, timeout=60)
        _send(conn, "GET", f"/v2/{name}/manifests/sha256-{hexd}", forwarded, None)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        if resp.status not in (200, 404):  # a 401 challenge and the like, as the registry said
            h.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(raw)))
            h.end_headers()
            h.wfile.write(raw)
            return
        entries = json.loads(raw).get("manifests", []) if resp.status == 200 else []
        extra = {}
        wanted = parse_qs(urlsplit(h.path).query).get("artifactType")
        if wanted:
            entries = [e for e in entries if e.get("artifactType") == wanted[0]]
            extra["OCI-Filters-Applied"] = "artifactType"
        body = json.dumps({"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": entries})
        h.send_response(200)
        h.send_header("Content-Type", _OCI_INDEX)
        for k, v in extra.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body.encode())

    def _take_slow_once(self, path: str) -> float:
        with self._lock:
            for pattern, seconds in list(self.faults.slow_once.items()):
                if re.search(pattern, path):
                    del self.faults.slow_once[pattern]
                    return seconds
        return 0.0

    def _take_upload_failure(self) -> bool:
        with self._lock:
            if self.faults.fail_upload_puts <= 0:
                return False
            self.faults.fail_upload_puts -= 1
            return True

    def _pipe(
        self,
        h: BaseHTTPRequestHandler,
        resp: http.client.HTTPResponse,
        digest: str | None,
        cut: bool,
    ) -> None:
        total = int(resp.getheader("Content-Length") or 0)
        sent = 0
        corrupt = digest is not None and digest in self.faults.corrupt
        while True:
            chunk = resp.read(65536)
            if not chunk:
                break
            if corrupt and sent == 0:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            if cut and sent + len(chunk) > total // 2:
                chunk = chunk[: max(0, total // 2 - sent)]
                h.wfile.write(chunk)
                h.wfile.flush()
                with self._lock:
                    self.blob_bytes += len(chunk)
                # Drop the connection mid-body, as a broken network would.
                h.close_connection = True
                h.connection.shutdown(2)
                return
            h.wfile.write(chunk)
            sent += len(chunk)
            if digest:
                with self._lock:
                    self.blob_bytes += len(chunk)


def _subject(body: bytes | None) -> str | None:
    """The digest a manifest body's ``subject`` names, if it is one with a subject."""
    try:
        subject = json.loads(body or b"").get("subject")
    except (ValueError, AttributeError):
        return None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> None:
    """Send a request with ``headers`` as they came, repeated ones included."""
    names = {k.lower() for k, _ in headers}
    conn.putrequest(
        method, path, skip_host="host" in names, skip_accept_encoding="accept-encoding" in names
    )
    for k, v in headers:
        conn.putheader(k, v)
    if body is not None and "content-length" not in names:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)


def _read_chunked(h: BaseHTTPRequestHandler) -> bytes:
    out = b""
    while True:
        size = int(h.rfile.readline().split(b";")[0], 16)
        if size == 0:
            h.rfile.readline()
            return out
        out += h.rfile.read(size)
        h.rfile.readline()


class Storage:
    """A blob "storage host" serving a registry's blob files straight from disk.

    Records the Authorization header of every request, so a test can prove none
    was forwarded across hosts.
    """

    def __init__(self, blob_path: Callable[[str], Path], host: str = "127.0.0.2") -> None:
        self.authorizations: list[str | None] = []
        self.hits = 0
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                storage.authorizations.append(self.headers.get("Authorization"))
                storage.hits += 1
                digest = self.path.rsplit("/", 1)[-1]
                data = blob_path(digest).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
