"""Egress discovery is no request-forgery lever (issue 11.1): the attacks, replayed.

The image, so the registry the broker probes, is the end user's choice. Each test
stands up a hostile registry (a little HTTP server on loopback) and, where the
attack needs one, an "internal service" on another loopback address that records
every request it gets.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from broker.settings import Settings
from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.brokerapp import Api, serve
from tests.support.clients import Clients
from tests.support.httpserver import reply, trickler
from tests.support.httpserver import serve as little_server
from tests.support.processes import free_port

SECRET = "internal-service-secret-token"
PUBLIC = "http://127.0.0.1:8443"  # the broker's public URL: it must resolve, it is in the rules


def _settings(settings: Settings, registry: str, allow: str, **more: object) -> Settings:
    return settings.model_copy(
        update={
            "insecure_registries": registry,
            "outbound_allow": allow,
            "public_url": PUBLIC,
            **more,
        }
    )


def _mint(api: Api, guid: str, image: str) -> None:
    body = staging_token_body(staging_guid=guid, image=image, username=None, password=None)
    minted = api.http.post(STAGING_TOKENS, headers=api.clients.cc.headers(PUBLIC), json=body)
    assert minted.status_code == 201, minted.text


@contextmanager
def _broker(settings: Settings, clients: Clients, image: str) -> Iterator[Api]:
    with serve(settings, clients, sweep=False) as api:
        _mint(api, "s1", image)
        yield api


def _rules(api: Api, guid: str = "s1") -> tuple[int, dict | list]:
    headers = api.clients.cc.headers(PUBLIC)
    r = api.http.get(f"/v1/stagings/{guid}/egress-rules", headers=headers)
    return r.status_code, r.json()


def _destinations(rules: list) -> set[str]:
    return {d for rule in rules for d in rule["destinations"]}


class Internal:
    """The service an attacker wants the broker to reach: records who asked."""

    def __init__(self) -> None:
        self.hits: list[str] = []

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        self.hits.append(h.path)
        reply(h, 200, json.dumps({"token": SECRET}).encode())


@pytest.mark.parametrize("allow", ["127.0.0.1/32", "127.0.0.0/8"])
def test_a_realm_on_another_host_is_never_asked(
    settings: Settings, clients: Clients, allow: str
) -> None:
    """Seen: the broker took a token from a loopback 'realm' and replayed it to the
    attacker's registry. Now a realm on another host is named, never contacted; and
    named in the rules only when its address is one the guard allows."""
    internal = Internal()
    authorizations: list[str] = []
    with little_server(internal, host="127.0.0.2") as realm_host:

        def registry(h: BaseHTTPRequestHandler) -> None:
            authorizations.append(h.headers.get("Authorization", ""))
            challenge = f'Bearer realm="http://{realm_host}/token",service="x"'
            reply(h, 401, b"{}", {"WWW-Authenticate": challenge})

        with little_server(registry) as host:
            s = _settings(settings, host, allow)
            with _broker(s, clients, f"{host}/team/app:1") as api:
                status, rules = _rules(api)
    assert internal.hits == []
    assert all(SECRET not in a for a in authorizations), authorizations
    assert status == 200, rules
    assert isinstance(rules, list)
    assert ("127.0.0.2" in _destinations(rules)) == (allow == "127.0.0.0/8")


def test_a_redirect_to_another_host_is_not_followed(settings: Settings, clients: Clients) -> None:
    """Seen: a manifest redirect to another host was followed."""
    internal = Internal()
    with little_server(internal, host="127.0.0.2") as elsewhere:

        def registry(h: BaseHTTPRequestHandler) -> None:
            if h.path == "/v2/":
                reply(h, 200, b"{}")
            else:
                reply(h, 307, b"", {"Location": f"http://{elsewhere}/latest/meta-data/"})

        with little_server(registry) as host:
            s = _settings(settings, host, "127.0.0.0/8")
            with _broker(s, clients, f"{host}/team/app:1") as api:
                status, rules = _rules(api)
    assert internal.hits == []
    assert status == 200, rules


def _anonymous_registry(blob_location: str) -> object:
    """A registry anyone may read, whose one blob is 'stored' at ``blob_location``."""
    layer = "sha256:" + hashlib.sha256(b"layer").hexdigest()
    config = "sha256:" + hashlib.sha256(b"config").hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": 6,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer,
                    "size": 5,
                }
            ],
        }
    ).encode()

    def registry(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/v2/":
            reply(h, 200, b"{}")
        elif "/manifests/" in h.path:
            reply(
                h,
                200,
                manifest,
                {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
        else:
            reply(h, 307, b"", {"Location": blob_location})

    return registry


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",  # metadata
        "http://10.0.0.1/blob",  # private
        "http://127.0.0.2:9/blob",  # loopback, not allowed here
    ],
)
def test_rules_never_name_an_address_the_guard_refuses(
    settings: Settings, clients: Clients, location: str
) -> None:
    """Seen: the rules opened egress to whatever address a registry named as its blob
    host. Such a host is left out now (and the log says so)."""
    with little_server(_anonymous_registry(location)) as host:  # type: ignore[arg-type]
        s = _settings(settings, host, "127.0.0.1/32")
        with _broker(s, clients, f"{host}/team/app:1") as api:
            status, rules = _rules(api)
    assert status == 200, rules
    assert isinstance(rules, list)
    assert _destinations(rules) == {"127.0.0.1"}


def test_a_public_blob_host_is_in_the_rules(settings: Settings, clients: Clients) -> None:
    """The guard is not a blanket: an allowed blob host is still opened (the control)."""
    with little_server(_anonymous_registry("http://127.0.0.3:8081/blob")) as host:  # type: ignore[arg-type]
        s = _settings(settings, host, "127.0.0.0/8")
        with _broker(s, clients, f"{host}/team/app:1") as api:
            status, rules = _rules(api)
    assert status == 200, rules
    assert isinstance(rules, list)
    assert "127.0.0.3" in _destinations(rules)


def test_no_port_oracle(settings: Settings, clients: Clients) -> None:
    """Seen: the 422 told an open port ('TLS handshake failed') from a closed one. Every
    reason a probe fails reads the same now: closed, open but not TLS, a refused
    address, a name that does not resolve."""
    with little_server(lambda h: reply(h, 200, b"not a registry")) as open_port:
        closed = f"127.0.0.1:{free_port()}"
        images = {
            "open": f"{open_port}/team/app:1",
            "closed": f"{closed}/team/app:1",
            "refused": "10.20.30.40:5000/team/app:1",
            "unresolvable": "no-such-registry.invalid/team/app:1",
        }
        details = {}
        s = _settings(settings, "", "127.0.0.0/8")
        with serve(s, clients, sweep=False) as api:
            for name, image in images.items():
                _mint(api, name, image)
                status, problem = _rules(api, name)
                assert status == 422, (name, problem)
                assert isinstance(problem, dict)
                details[name] = problem["detail"]
    assert len(set(details.values())) == 1, details
    assert "TLS" not in details["open"]


def test_a_tarpit_registry_slows_nothing_else(
    settings: Settings, clients: Clients, database_url: str
) -> None:
    """Seen: 40 stagings of a registry that trickles its /v2/ body held every worker
    thread of the PostgreSQL broker, and /v1/registry-token stalled (cells could not
    pull). Now probes have threads and a cap of their own and one deadline each."""
    stop = threading.Event()
    held = threading.Semaphore(0)

    probes = 48  # more than the threadpool's 40
    with little_server(trickler(stop, on_hold=held.release)) as host:
        s = _settings(
            settings,
            host,
            "127.0.0.0/8",
            database_url=database_url,
            egress_probes=4,
            egress_probe_seconds=3.0,
        )
        with serve(s, clients, sweep=False) as api:
            for n in range(probes):
                _mint(api, f"t{n}", f"{host}/t/app:1")
            answers: dict[int, tuple[int, str]] = {}

            def probe(n: int) -> None:
                r = api.http.get(
                    f"/v1/stagings/t{n}/egress-rules", headers=api.clients.cc.headers(PUBLIC)
                )
                answers[n] = (r.status_code, r.headers.get("Retry-After", ""))

            threads = [threading.Thread(target=probe, args=(n,)) for n in range(probes)]
            try:
                for t in threads:
                    t.start()
                assert held.acquire(timeout=10)  # the tarpit holds a probe now
                tokens: list[int] = []

                def pull_token() -> None:
                    for _ in range(5):
                        r = api.http.get(
                            "/v1/registry-token",
                            headers=api.clients.puller.headers(PUBLIC),
                            params={"service": "internal-registry"},
                        )
                        tokens.append(r.status_code)

                puller = threading.Thread(target=pull_token)
                puller.start()
                puller.join(timeout=15)
                assert tokens == [200] * 5, "registry tokens waited on the probes"
                for t in threads:
                    t.join(timeout=20)
                assert not any(t.is_alive() for t in threads), "a probe outlived its deadline"
            finally:
                stop.set()
    statuses = sorted(status for status, _ in answers.values())
    assert statuses.count(422) <= 4 and statuses.count(422) >= 1, statuses
    assert statuses.count(503) == probes - statuses.count(422), statuses
    assert all(after == "1" for status, after in answers.values() if status == 503)
