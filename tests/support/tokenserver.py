"""A small token server for Distribution's ``auth: token`` (test-only, on loopback).

GET with Basic credentials, and OAuth2 POST (password and refresh_token grants).
Tokens are ES256 JWTs whose ``x5c`` header carries the self-signed certificate the
registry trusts: Distribution 2.8 accepts them when ``iss`` is its configured issuer,
``aud`` its service and the certificate is in its ``rootcertbundle``.
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


@dataclass
class Call:
    method: str
    grant: str
    scopes: list[str]
    authorized: bool


@dataclass
class TokenServer:
    username: str
    password: str
    root: Path
    expires_in: int = 300
    oversized: bool = False
    refuse_anonymous: bool = False
    """Answer 401 to a token request without valid credentials, as the broker does (by
    default an anonymous GET gets a token granting nothing, as Docker Hub's realm does)."""
    bind: str = "127.0.0.1"
    calls: list[Call] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)

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
                user = server._basic(self.headers.get("Authorization"))
                server._answer(self, "GET", "basic", query.get("scope", []), user)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = " ".join(form.get("scope", [])).split()
                user = None
                if grant == "password":
                    given = (form.get("username", [""])[0], form.get("password", [""])[0])
                    user = given[0] if given == (server.username, server.password) else None
                elif grant == "refresh_token":
                    token = form.get("refresh_token", [""])[0]
                    user = server.username if token in server.refresh_tokens else None
                server._answer(self, "POST", grant, scopes, user, issue_refresh=True)

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

    def _token(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if user and kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.expires_in,
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
        method: str,
        grant: str,
        scopes: list[str],
        user: str | None,
        issue_refresh: bool = False,
    ) -> None:
        with self._lock:
            self.calls.append(Call(method, grant, scopes, user is not None))
        if user is None and (method == "POST" or self.refuse_anonymous):
            handler.send_response(401)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if self.oversized:
            body = b'{"token": "' + b"a" * (1024 * 1024) + b'"}'
        else:
            token = self._token(user, scopes)
            answer = {"token": token, "access_token": token, "expires_in": self.expires_in}
            if issue_refresh and user:
                answer["refresh_token"] = self.new_refresh_token()
            body = json.dumps(answer).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@dataclass
class TokenRegistry:
    """A registry with token auth, and the token server it trusts."""

    registry: Registry
    server: TokenServer
