"""The outbound guard (tailor/outbound.py): addresses, pinned hosts, one deadline."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tailor.errors import ConfigError, TransportError
from tailor.outbound import AddressPolicy, DeadlineExceeded, Probe, Refused, parse_networks
from tests.support.httpserver import reply, serve, trickler

PUBLIC = AddressPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",  # private
        "169.254.169.254",  # link-local: AWS, GCP, OpenStack metadata
        "100.100.100.200",  # shared 100.64/10: Alibaba metadata
        "168.63.129.16",  # Azure WireServer (a public address)
        "192.0.0.192",  # Oracle metadata
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",  # multicast
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",  # unique-local: AWS IPv6 metadata
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::1",  # local-use NAT64
    ],
)
def test_addresses_refused_by_default(address: str) -> None:
    assert PUBLIC.refusal(address) is not None
    with pytest.raises(Refused, match="not an allowed destination"):
        PUBLIC.addresses(address, 443)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_public_addresses_allowed(address: str) -> None:
    assert PUBLIC.refusal(address) is None


def test_the_operator_allows_a_network() -> None:
    policy = AddressPolicy(parse_networks("127.0.0.0/8, fd00::/8"))
    assert policy.refusal("127.0.0.5") is None
    assert policy.refusal("fd00::1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None  # the mapped form of an allowed one
    assert policy.refusal("10.0.0.1") is not None
    with pytest.raises(ConfigError, match="not a network in CIDR notation: 'nope'"):
        parse_networks("10.0.0.0/8,nope")


def test_a_name_is_refused_when_any_of_its_addresses_is() -> None:
    """DNS answers are checked whole: one public address does not carry a private one."""
    mixed = AddressPolicy(resolver=lambda host, port: ["8.8.8.8", "10.0.0.1"])
    with pytest.raises(Refused, match=r"registry\.example \(10\.0\.0\.1\)"):
        mixed.addresses("registry.example", 443)
    public = AddressPolicy(resolver=lambda host, port: ["8.8.8.8"])
    assert public.addresses("registry.example", 443) == ["8.8.8.8"]


def test_every_connection_is_checked_at_connect_time() -> None:
    """A rebinding name (public when first asked, loopback a moment later) cannot win:
    each connection resolves once, checks, and connects to the address it checked."""
    answers = iter([["8.8.8.8"], ["127.0.0.1"]])
    policy = AddressPolicy(resolver=lambda host, port: next(answers))
    with serve(lambda h: reply(h, 200, b"internal")) as host:
        port = int(host.rsplit(":", 1)[1])
        assert policy.addresses("evil.example", port) == ["8.8.8.8"]  # the first answer
        with Probe(policy, ["evil.example"], 5) as p, pytest.raises(Refused, match=r"127\.0\.0\.1"):
            p.session().get(f"http://evil.example:{port}/", timeout=5)


def test_a_probe_reaches_only_its_own_hosts() -> None:
    allow = AddressPolicy(parse_networks("127.0.0.0/8"))
    seen: list[str] = []

    def record(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.path)
        reply(h, 200, b"{}")

    with serve(record, host="127.0.0.2") as other, Probe(allow, ["127.0.0.1"], 5) as p:
        with pytest.raises(Refused, match="not a host this request may reach"):
            p.session().get(f"http://{other}/secret", timeout=5)
    assert seen == []


def test_the_environment_proxy_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.9:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.9:9")
    allow = AddressPolicy(parse_networks("127.0.0.0/8"))
    with serve(lambda h: reply(h, 200, b"direct")) as host, Probe(allow, ["127.0.0.1"], 5) as p:
        assert p.session().get(f"http://{host}/", timeout=5).text == "direct"


def test_one_deadline_for_a_trickling_answer() -> None:
    """A read timeout restarts at each byte; the probe's deadline does not."""
    stop = threading.Event()
    allow = AddressPolicy(parse_networks("127.0.0.0/8"))
    with serve(trickler(stop, length=1000)) as host:
        try:
            with Probe(allow, ["127.0.0.1"], 1.0) as p:
                started = time.monotonic()
                with pytest.raises((requests.RequestException, TransportError)):
                    p.session().get(f"http://{host}/", timeout=(5, 5))
                took = time.monotonic() - started
                with pytest.raises(DeadlineExceeded):
                    p.session().get(f"http://{host}/again", timeout=(5, 5))
        finally:
            stop.set()
    assert took < 10, took  # the trickle would have gone on for 30 s
