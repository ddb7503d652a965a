"""Auth, retries and redirects of the transport, against little real HTTP servers."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler

import pytest

from tailor.authn import (
    ANONYMOUS,
    AuthConfig,
    Authenticator,
    Basic,
    IdentityToken,
    PlatformAssertion,
    TokenProvider,
)
from tailor.bearer import check_realm
from tailor.challenge import Challenge
from tailor.errors import AuthError, NotFound, RegistryError, TransportError, Unauthorized
from tailor.retry import RetryPolicy
from tailor.transport import InsecureHosts, Transport
from tests.support.httpserver import reply, serve
from tests.support.processes import free_port

NO_WAIT = RetryPolicy(attempts=4, base=0.001, cap=0.002, max_retry_after=0.01)


def test_insecure_hosts_match_host_or_host_port() -> None:
    insecure = InsecureHosts(["reg.local", "10.0.0.1:5000"])
    assert insecure("reg.local:443") and insecure("reg.local")
    assert insecure("10.0.0.1:5000") and not insecure("10.0.0.1:5001")
    assert not insecure("other.local")


@pytest.mark.parametrize("given", ["::1", "[::1]", "[0::1]", "0:0:0:0:0:0:0:1", "[::1]:5000"])
def test_an_insecure_ipv6_host_matches_however_it_is_written(given: str) -> None:
    """Reported: ``--insecure-registry ::1`` (no brackets) did not match ``[::1]:5000``,
    and the copy then blamed TLS although the flag was given."""
    insecure = InsecureHosts([given])
    assert insecure("[::1]:5000") and insecure("[0:0::1]:5000")
    assert insecure("[::1]:5001") == (not given.endswith(":5000"))
    assert not insecure("[::2]:5000") and not insecure("127.0.0.1:5000")


def test_insecure_hosts_ignore_case_scheme_and_slash() -> None:
    insecure = InsecureHosts(["Reg.Local:5000/", "http://other.local"])
    assert insecure("reg.local:5000") and insecure("OTHER.local:443")
    assert not insecure("reg.local:5001")


@pytest.mark.parametrize(
    ("realm", "ok"),
    [
        ("https://auth.example/token", True),
        ("http://reg.local:81/token", True),  # the registry's own host, marked insecure
        ("http://auth.example/token", False),
        # The realm receives the password: plain HTTP to another host never, marked or not.
        ("http://auth.local/token", False),
        ("ftp://auth.example/token", False),
        ("https://user:pw@auth.example/token", False),
        ("https:///token", False),
        ("not a url", False),
    ],
)
def test_realm_checks(realm: str, ok: bool) -> None:
    insecure = InsecureHosts(["reg.local", "auth.local"])
    if ok:
        assert check_realm(realm, "reg.local:5000", insecure) == realm
    else:
        with pytest.raises(AuthError):
            check_realm(realm, "reg.local:5000", insecure)


class TokenRegistry:
    """A registry speaking bearer auth and its token endpoint, on one little server."""

    def __init__(self, lifetime: int = 300) -> None:
        self.token_calls: list[dict[str, list[str]]] = []
        self.issued = 0
        self.revoked: set[str] = set()
        self.lifetime = lifetime
        self.need_extra_scope = False
        self.refuse_post = False
        self.token_requests: list[tuple[str, str | None, dict[str, list[str]]]] = []
        self.host = ""

    def handler(self, h: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(h.path)
        if url.path == "/token":
            form = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode()
            self.token_requests.append((h.command, h.headers.get("Authorization"), parse_qs(form)))
            if h.command == "POST" and self.refuse_post:
                reply(h, 405, b"")
                return
            self.token_calls.append(parse_qs(url.query))
            self.issued += 1
            token = f"tok{self.issued}"
            body = json.dumps({"token": token, "expires_in": self.lifetime}).encode()
            reply(h, 200, body)
            return
        auth = h.headers.get("Authorization", "")
        challenge = f'Bearer realm="http://{self.host}/token",service="svc"'
        if not auth.startswith("Bearer ") or auth[7:] in self.revoked:
            reply(h, 401, b"", {"WWW-Authenticate": challenge})
            return
        if self.need_extra_scope and auth[7:] == "tok1":
            extra = 'scope="repository:a:pull repository:b:pull",error="insufficient_scope"'
            reply(h, 401, b"", {"WWW-Authenticate": f"{challenge},{extra}"})
            return
        reply(h, 200, b"{}")


def test_bearer_tokens_are_cached_per_scope_and_refetched_on_401() -> None:
    fake = TokenRegistry()
    with serve(fake.handler) as host:
        fake.host = host
        t = Transport(host, Basic("u", "p"), InsecureHosts([host]), policy=NO_WAIT)
        for _ in range(3):
            t.request("GET", "/v2/a/manifests/x", scopes=["repository:a:pull"], what="m").close()
        assert len(fake.token_calls) == 1
        assert fake.token_calls[0]["scope"] == ["repository:a:pull"]
        t.request("GET", "/v2/b/manifests/x", scopes=["repository:b:pull"], what="m").close()
        assert len(fake.token_calls) == 2
        # The registry stops accepting the cached token: one fresh fetch, then success.
        fake.revoked.add("tok1")
        t.request("GET", "/v2/a/manifests/x", scopes=["repository:a:pull"], what="m").close()
        assert len(fake.token_calls) == 3


def test_insufficient_scope_widens_the_token() -> None:
    fake = TokenRegistry()
    fake.need_extra_scope = True
    with serve(fake.handler) as host:
        fake.host = host
        t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
        t.request("GET", "/v2/a/x", scopes=["repository:a:pull"], what="m").close()
    assert fake.token_calls[-1]["scope"] == ["repository:a:pull", "repository:b:pull"]


def test_expired_tokens_are_refreshed() -> None:
    fake = TokenRegistry(lifetime=60)
    with serve(fake.handler) as host:
        fake.host = host
        t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
        now = [1000.0]
        t.tokens._clock = lambda: now[0]
        challenge = Challenge("bearer", {"realm": f"http://{host}/token", "service": "svc"})
        assert t.tokens.token(challenge, ["s"]) == "tok1"
        now[0] += 30
        assert t.tokens.token(challenge, ["s"]) == "tok1"
        now[0] += 30  # within the refresh margin of the 60 s lifetime
        assert t.tokens.token(challenge, ["s"]) == "tok2"


def test_basic_auth_goes_to_the_registry_and_not_across_redirects() -> None:
    seen: dict[str, list[str | None]] = {"registry": [], "storage": []}

    def storage_host(h: BaseHTTPRequestHandler) -> None:
        seen["storage"].append(h.headers.get("Authorization"))
        reply(h, 200, b"blob-bytes")

    with serve(storage_host, host="127.0.0.2") as storage:

        def registry(h: BaseHTTPRequestHandler) -> None:
            auth = h.headers.get("Authorization")
            seen["registry"].append(auth)
            if auth != "Basic " + base64.b64encode(b"alice:pw1").decode():
                reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="r"'})
            elif h.path.startswith("/v2/a/blobs/"):
                reply(h, 307, b"", {"Location": f"http://{storage}/bucket/obj?sig=1"})
            else:
                reply(h, 200, b"{}")

        with serve(registry) as host:
            t = Transport(
                host,
                Basic("alice", "pw1"),
                InsecureHosts([host, "127.0.0.2"]),
                policy=NO_WAIT,
            )
            r = t.request("GET", "/v2/a/blobs/sha256:x", scopes=[], what="b", stream=True)
            assert r.content == b"blob-bytes"
    assert seen["storage"] == [None]
    assert seen["registry"][-1] is not None and seen["registry"][-1].startswith("Basic ")


def test_https_is_the_default_scheme() -> None:
    t = Transport("reg.invalid", ANONYMOUS)
    assert t.base_url == "https://reg.invalid"


def test_retries_then_gives_the_registry_error() -> None:
    calls = {"n": 0}

    def flaky(h: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        if h.path == "/v2/":
            reply(h, 200, b"{}")
        elif calls["n"] < 4:
            reply(h, 503, b"", {"Retry-After": "0"})
        else:
            body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "gone"}]})
            reply(h, 404, body.encode())

    with serve(flaky) as host:
        t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(NotFound) as info:
            t.request("GET", "/v2/a/manifests/x", scopes=[], what="manifest a:x")
    assert info.value.codes == ["MANIFEST_UNKNOWN"]
    assert str(info.value) == "not found: manifest a:x (MANIFEST_UNKNOWN: gone)"


def test_persistent_5xx_gives_up_after_the_policy() -> None:
    calls = {"n": 0}

    def down(h: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        reply(h, 200 if h.path == "/v2/" else 500, b"{}")

    with serve(down) as host:
        t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(RegistryError, match="HTTP 500"):
            t.request("GET", "/v2/a/manifests/x", scopes=[], what="m")
    assert calls["n"] == 1 + NO_WAIT.attempts


def test_unreachable_registry_is_a_transport_error() -> None:
    host = f"127.0.0.1:{free_port()}"
    t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
    with pytest.raises(TransportError, match=f"cannot reach {host}"):
        t.request("GET", "/v2/a/manifests/x", scopes=[], what="m")


def test_401_without_challenge_and_basic_failure() -> None:
    with serve(lambda h: reply(h, 401, b"")) as host:
        t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(AuthError, match="without a challenge"):
            t.request("GET", "/v2/a/manifests/x", scopes=[], what="m")
    with serve(lambda h: reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="x"'})) as host:
        t = Transport(host, Basic("u", "wrong"), InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(Unauthorized):
            t.request("GET", "/v2/a/manifests/x", scopes=[], what="m")


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Counting:
    """An authenticator that counts how often it is asked (and offers a Basic pair)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, list[str]]] = []

    def authorization(self, realm: str | None, scopes: Sequence[str]) -> AuthConfig:
        self.asked.append((realm, list(scopes)))
        return AuthConfig(basic=("u", "p"))


def test_the_authenticator_is_asked_only_on_a_cache_miss() -> None:
    fake = TokenRegistry()
    with serve(fake.handler) as host:
        fake.host = host
        auth = Counting()
        t = Transport(host, auth, InsecureHosts([host]), policy=NO_WAIT)
        for _ in range(3):
            t.request("GET", "/v2/a/manifests/x", scopes=["repository:a:pull"], what="m").close()
        t.request("GET", "/v2/b/manifests/x", scopes=["repository:b:pull"], what="m").close()
    realm = f"http://{host}/token"
    assert auth.asked == [(realm, ["repository:a:pull"]), (realm, ["repository:b:pull"])]
    assert [a for _, a, _ in fake.token_requests] == [basic_header("u", "p")] * 2


def test_a_token_provider_is_used_as_is_and_its_realm_never_asked() -> None:
    minted: list[list[str]] = []
    seen: list[str | None] = []

    def mint(scopes: Sequence[str]) -> str:
        minted.append(list(scopes))
        return f"minted-{len(minted)}"

    def registry(h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("Authorization")
        seen.append(auth)
        if not (auth or "").startswith("Bearer minted-"):
            # A plain-HTTP realm nobody marked insecure, on a port nothing listens on.
            realm = 'Bearer realm="http://127.0.0.1:9/token",service="svc"'
            reply(h, 401, b"", {"WWW-Authenticate": realm})
        else:
            reply(h, 200, b"{}")

    with serve(registry) as host:
        t = Transport(host, TokenProvider(mint), InsecureHosts([host]), policy=NO_WAIT)
        for _ in range(2):
            t.request("GET", "/v2/a/x", scopes=["repository:a:pull,delete"], what="m").close()
    # Not cached: minted for each request, for exactly the scopes asked.
    assert minted == [["repository:a:pull,delete"]] * 2
    assert seen == [None, "Bearer minted-1", "Bearer minted-2"]


def test_a_platform_assertion_goes_to_its_own_realm_only() -> None:
    fake = TokenRegistry()
    with serve(fake.handler) as host:
        fake.host = host
        mine = PlatformAssertion("tailor-1", lambda: "fresh-assertion", f"http://{host}/token")
        t = Transport(host, mine, InsecureHosts([host]), policy=NO_WAIT)
        t.request("GET", "/v2/a/x", scopes=["repository:a:pull"], what="m").close()
        other = PlatformAssertion("tailor-1", lambda: "fresh-assertion", "http://broker.invalid/")
        t2 = Transport(host, other, InsecureHosts([host]), policy=NO_WAIT)
        t2.request("GET", "/v2/a/x", scopes=["repository:a:pull"], what="m").close()
    assert [a for _, a, _ in fake.token_requests] == [
        basic_header("tailor-1", "fresh-assertion"),
        None,  # another realm: an anonymous token request
    ]
    basic_seen: list[str | None] = []

    def basic_registry(h: BaseHTTPRequestHandler) -> None:
        basic_seen.append(h.headers.get("Authorization"))
        reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="r"'})

    with serve(basic_registry) as host:
        t3 = Transport(host, mine, InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(Unauthorized):
            t3.request("GET", "/v2/a/x", scopes=[], what="m")
    assert basic_seen == [None, None]


def test_an_identity_token_is_posted_and_falls_back_to_basic_on_405() -> None:
    fake = TokenRegistry()
    with serve(fake.handler) as host:
        fake.host = host
        t = Transport(host, IdentityToken("rt-1"), InsecureHosts([host]), policy=NO_WAIT)
        t.request("GET", "/v2/a/x", scopes=["repository:a:pull"], what="m").close()
        fake.refuse_post = True
        auth = IdentityToken("rt-2", Basic("alice", "pw1"))
        t2 = Transport(host, auth, InsecureHosts([host]), policy=NO_WAIT)
        t2.request("GET", "/v2/a/x", scopes=["repository:a:pull"], what="m").close()
    calls = [
        (method, authz, form.get("refresh_token")) for method, authz, form in fake.token_requests
    ]
    assert calls == [
        ("POST", None, ["rt-1"]),
        ("POST", None, ["rt-2"]),
        ("GET", basic_header("alice", "pw1"), None),
    ]


class Refusing:
    """A registry with bearer auth whose token endpoint (on the same server) refuses what
    ``refuse`` says: ``"anonymous"`` token requests without credentials (as the broker does),
    ``"all"`` every token request; with ``"registry"`` the realm hands out tokens and the
    registry refuses every one of them (a token without the access asked for)."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.host = ""
        self.token_scopes: list[list[str]] = []

    def handler(self, h: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(h.path)
        if url.path == "/token":
            h.rfile.read(int(h.headers.get("Content-Length") or 0))
            self.token_scopes.append(parse_qs(url.query).get("scope", []))
            anonymous = not h.headers.get("Authorization")
            if self.refuse == "all" or (self.refuse == "anonymous" and anonymous):
                reply(h, 401, b"")
            else:
                reply(h, 200, json.dumps({"token": "t", "expires_in": 300}).encode())
            return
        challenge = f'Bearer realm="http://{self.host}/token",service="svc"'
        if h.headers.get("Authorization") and self.refuse == "registry-wants-more":
            challenge += ',scope="repository:a:pull repository:other:pull,push"'
            challenge += ',error="insufficient_scope"'
        if h.headers.get("Authorization") and self.refuse not in (
            "registry",
            "registry-wants-more",
        ):
            reply(h, 200, b"{}")
            return
        body = json.dumps(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        )
        reply(h, 401, body.encode(), {"WWW-Authenticate": challenge})


def refusal(auth: Authenticator, refuse: str, hint: str = "") -> tuple[Unauthorized, str]:
    fake = Refusing(refuse)
    with serve(fake.handler) as host:
        fake.host = host
        t = Transport(host, auth, InsecureHosts([host]), policy=NO_WAIT, hint=hint)
        with pytest.raises(Unauthorized) as info:
            t.request(
                "GET", "/v2/a/manifests/v1", scopes=["repository:a:pull"], what="manifest a:v1"
            )
    return info.value, host


def test_an_anonymous_refusal_says_no_credentials_were_given() -> None:
    hint = "use --src-username"
    # The token server refuses a token request without credentials (the broker does).
    exc, host = refusal(ANONYMOUS, "anonymous", hint)
    assert exc.sent is None
    assert str(exc) == (
        f"unauthorized: token server {host} refused anonymous access to manifest a:v1: "
        "no credentials were given (use --src-username)"
    )
    # The realm hands out an anonymous token, the registry refuses it (Docker Hub, Distribution).
    exc, host = refusal(ANONYMOUS, "registry", hint)
    assert str(exc) == (
        f"unauthorized: registry {host} refused anonymous access to manifest a:v1: "
        "no credentials were given (use --src-username)"
    )
    # A registry with a Basic challenge, and no credentials to answer it.
    with serve(lambda h: reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="r"'})) as host:
        t = Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(Unauthorized) as info:
            t.request("GET", "/v2/a/manifests/v1", scopes=[], what="manifest a:v1")
    assert str(info.value) == (
        f"unauthorized: registry {host} refused anonymous access to manifest a:v1: "
        "no credentials were given"
    )
    # The platform identity for another realm sends nothing: that is anonymous too.
    elsewhere = PlatformAssertion("tailor-1", lambda: "assertion-xyz", "https://broker.invalid/")
    exc, host = refusal(elsewhere, "anonymous")
    assert exc.sent is None and "no credentials were given" in str(exc)


def test_refused_credentials_say_which_were_refused_and_no_secret() -> None:
    exc, host = refusal(Basic("alice", "pw-secret-1"), "all", "use --src-username")
    assert str(exc) == (
        f"unauthorized: token server {host} refused the basic credentials for manifest a:v1"
    )
    exc, host = refusal(Basic("alice", "pw-secret-1"), "registry")
    assert str(exc) == (
        f"unauthorized: registry {host} refused the basic credentials for manifest a:v1 "
        "(UNAUTHORIZED: authentication required)"
    )
    exc, host = refusal(IdentityToken("rt-secret-2"), "all")
    assert str(exc).startswith(f"unauthorized: token server {host} refused the identity token ")
    mine = PlatformAssertion("tailor-1", lambda: "assertion-secret-3", "http://127.0.0.1:")
    exc, host = refusal(mine, "all")
    assert str(exc) == (
        f"unauthorized: token server {host} refused the platform identity tailor-1 "
        "for manifest a:v1"
    )
    exc, host = refusal(TokenProvider(lambda scopes: "minted-secret-4"), "registry")
    assert str(exc).startswith(f"unauthorized: registry {host} refused the registry token ")
    with serve(lambda h: reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="r"'})) as host:
        t = Transport(host, Basic("bob", "pw-secret-5"), InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(Unauthorized) as info:
            t.request("GET", "/v2/a/manifests/v1", scopes=[], what="manifest a:v1")
    assert str(info.value) == (
        f"unauthorized: registry {host} refused the basic credentials for manifest a:v1"
    )
    assert info.value.sent == "the basic credentials"


def test_a_challenge_does_not_widen_a_token_of_the_platform_identity() -> None:
    """Its tokens go to whichever registry named the broker's realm: they cover only what
    the request itself names, whatever a registry's challenge asks for."""
    mine = PlatformAssertion("tailor-1", lambda: "assertion", "http://127.0.0.1:")
    fake = Refusing("registry-wants-more")
    with serve(fake.handler) as host:
        fake.host = host
        t = Transport(host, mine, InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(Unauthorized):
            t.request("GET", "/v2/a/manifests/v1", scopes=["repository:a:pull"], what="m")
        # A token got with the user's own credentials is widened, as a registry asks.
        t2 = Transport(host, Basic("alice", "pw"), InsecureHosts([host]), policy=NO_WAIT)
        with pytest.raises(Unauthorized):
            t2.request("GET", "/v2/a/manifests/v1", scopes=["repository:a:pull"], what="m")
    assert fake.token_scopes[:2] == [["repository:a:pull"], ["repository:a:pull"]]
    assert fake.token_scopes[2:] == [
        ["repository:a:pull"],
        ["repository:a:pull", "repository:other:pull,push"],
    ]
