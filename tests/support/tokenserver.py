"""A small token server for Distribution's ``auth: token`` (test-only, on loopback).

GET with Basic credentials, and OAuth2 POST (password and refresh_token grants; or 405,
as a GET-only realm answers). Refresh tokens are answered to a good POST (to a GET too
with ``refresh_on_get``), and accepted in a refresh_token grant.
Tokens are ES256 JWTs whose ``x5c`` header carries the self-signed certificate the
registry trusts: Distribution 2.8 accepts them when ``iss`` is its configured issuer,
``aud`` its service and the certificate is in its ``rootcertbundle``.

It records every request (:class:`Call`): method, grant, scopes, the query or form
(a password masked), the Basic user, the refresh token presented and the one handed
out, so tests can pin down what a client sends to a realm. Distribution accepts a
token until 60 s past its ``exp`` (``LEEWAY``); ``registry_seconds`` makes the registry
refuse tokens that many seconds after they were issued, whatever ``expires_in`` says.

Modes for what real realms do: ``get_status`` answers every GET with 404 or 405 (a realm
that takes only the OAuth2 POST); ``expires_in`` None leaves it out of the answer (the
spec's default, 60 s, applies) and ``issued_at`` adds the spec's field (as Docker Hub
writes it, nanoseconds and ``Z``), shifted by that many seconds; ``unreadable``
repositories get a token granting nothing, to the right user too (a realm narrowing a
scope the user may not have, as Docker Hub's does); ``public`` ones are pullable with an
anonymous token; ``refuse_wrong`` answers 401 to a GET with wrong credentials (by default
it gets a token granting nothing, as an anonymous GET does); ``explain`` answers a refusal
with a body saying why (Docker Hub's ``details`` to a GET; to a POST, OAuth2's 400
``invalid_grant`` with an ``error_description``).
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.registry import Registry

ISSUER = "test-token-issuer"
SERVICE = "test-registry"
LEEWAY = 60  # seconds Distribution 2.8 still accepts a token past its exp


@dataclass
class Call:
    method: str
    grant: str  # "basic" for a GET, else the form's grant_type
    scopes: list[str]
    authorized: bool
    params: dict[str, list[str]] = field(default_factory=dict)  # query or form; password masked
    basic_user: str | None = None  # the user of a Basic header, right or wrong
    refresh_token: str = ""  # the refresh token presented (POST refresh_token grant)
    issued_refresh: str = ""  # the refresh token answered
    user_agent: str = ""
    at: float = 0.0  # time.monotonic()


@dataclass
class TokenServer:
    username: str
    password: str
    root: Path
    expires_in: int | None = 300
    oversized: bool = False
    refuse_anonymous: bool = False
    """Answer 401 to a token request without valid credentials, as the broker does (by
    default an anonymous GET gets a token granting nothing, as Docker Hub's realm does)."""
    bind: str = "127.0.0.1"
    calls: list[Call] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)
    refresh_on_get: bool = False  # answer a refresh_token to a good GET too
    registry_seconds: int | None = None  # the registry refuses a token this long after issue
    accept_post: bool = True  # False: answer POST with 405, as a GET-only realm does
    get_status: int | None = None  # answer every GET with this (404, 405): a POST-only realm
    issued_at: float | None = None  # add issued_at (RFC 3339), this many seconds off our clock
    unreadable: set[str] = field(default_factory=set)  # repositories granted nothing
    public: set[str] = field(default_factory=set)  # repositories an anonymous token pulls
    refuse_wrong: bool = False  # 401 to a GET with wrong credentials, not an empty token
    explain: bool = False  # a refusal's body says why, as real realms' do

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.root / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                header = self.headers.get("Authorization")
                user = server._basic(header)
                call = server._call(self, "GET", "basic", query.get("scope", []), query)
                call.basic_user = _basic_user(header)
                if server.get_status is not None:  # as a realm taking only the POST answers
                    with server._lock:
                        server.calls.append(call)
                    self.send_response(server.get_status)
                    self.send_header("Allow", "POST")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server._answer(self, call, user, issue_refresh=server.refresh_on_get)

            def do_POST(self) -> None:
                form = parse_qs(_read_body(self).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = " ".join(form.get("scope", [])).split()
                call = server._call(self, "POST", grant, scopes, form)
                call.basic_user = _basic_user(self.headers.get("Authorization"))
                user = None
                if grant == "password":
                    given = (form.get("username", [""])[0], form.get("password", [""])[0])
                    user = given[0] if given == (server.username, server.password) else None
                elif grant == "refresh_token":
                    call.refresh_token = token = form.get("refresh_token", [""])[0]
                    user = server.username if token in server.refresh_tokens else None
                if server.accept_post:
                    server._answer(self, call, user, issue_refresh=True)
                    return
                with server._lock:  # as a GET-only realm (the broker's) answers
                    server.calls.append(call)
                self.send_response(405)
                self.send_header("Allow", "GET")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer((self.bind, 0), Handler)
        self.host = f"{self.bind}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://{self.host}/token"

    def registry_auth(self) -> dict:
        return {
            "realm": self.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.cert_path),
        }

    def new_refresh_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        return token

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _basic(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if (user, password) == (self.username, self.password) else None

    def _call(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        grant: str,
        scopes: list[str],
        params: dict[str, list[str]],
    ) -> Call:
        shown = {k: ["***"] * len(v) if k == "password" else v for k, v in params.items()}
        agent = handler.headers.get("User-Agent", "")
        return Call(method, grant, scopes, False, shown, user_agent=agent, at=time.monotonic())

    def _token(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or name in self.unreadable:
                continue
            if user:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
            elif name in self.public and "pull" in actions.split(","):
                access.append({"type": kind, "name": name, "actions": ["pull"]})
        now = int(time.time())
        lifetime = self.expires_in if self.expires_in is not None else 60
        if self.registry_seconds is not None:
            lifetime = self.registry_seconds - LEEWAY
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        headers = {"x5c": [base64.b64encode(der).decode()]}
        return jwt.encode(claims, self.key, algorithm="ES256", headers=headers)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        call: Call,
        user: str | None,
        issue_refresh: bool = False,
    ) -> None:
        call.authorized = user is not None
        if not self.oversized and issue_refresh and user:
            call.issued_refresh = self.new_refresh_token()
        with self._lock:
            self.calls.append(call)
        wrong = self.refuse_wrong and call.basic_user is not None
        if user is None and (call.method == "POST" or self.refuse_anonymous or wrong):
            why, status = b"", 401
            if self.explain and call.method == "POST":  # RFC 6749's answer to a wrong password
                why = b'{"error": "invalid_grant", "error_description": "invalid credentials"}'
                status = 400
            elif self.explain:
                why = b'{"details": "incorrect username or password"}'
            handler.send_response(status)
            if why:
                handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(why)))
            handler.end_headers()
            handler.wfile.write(why)
            return
        if self.oversized:
            body = b'{"token": "' + b"a" * (1024 * 1024) + b'"}'
        else:
            token = self._token(user, call.scopes)
            answer: dict[str, object] = {"token": token, "access_token": token}
            if self.expires_in is not None:
                answer["expires_in"] = self.expires_in
            if self.issued_at is not None:
                at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
                    seconds=self.issued_at
                )
                answer["issued_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
            if call.issued_refresh:
                answer["refresh_token"] = call.issued_refresh
            body = json.dumps(answer).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body, sized or chunked (containers/image posts its OAuth2 form chunked)."""
    if h.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return h.rfile.read(int(h.headers.get("Content-Length", "0")))
    body = b""
    while size := int(h.rfile.readline().split(b";")[0], 16):
        body += h.rfile.read(size)
        h.rfile.readline()
    while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return body


def _basic_user(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    return base64.b64decode(header[6:]).decode().partition(":")[0]


@dataclass
class TokenRegistry:
    """A registry with token auth, and the token server it trusts."""

    registry: Registry
    server: TokenServer
