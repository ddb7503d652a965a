"""Egress rules: discovered from real registries, validated as BBS validates them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailor.egress import Endpoint, security_group_rules, validate_rule
from tests.support import markers
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.images import Layout, image
from tests.support.proxy import Proxy, Storage
from tests.support.registry import Registry, start_registry
from tests.support.skopeo import Skopeo
from tests.support.tokenserver import TokenServer


def fake_resolver(host: str, port: int) -> list[str]:
    return {"a.example": ["10.0.0.1"], "b.example": ["10.0.0.2", "fd00::2"]}.get(host, [host])


def test_rules_merge_ports_and_destinations() -> None:
    rules = security_group_rules(
        [
            Endpoint("a.example", 443, "broker"),
            Endpoint("a.example", 5000, "internal"),
            Endpoint("b.example", 443, "upstream"),
            Endpoint("a.example", 443, "again"),
        ],
        resolver=fake_resolver,
    )
    assert rules == [
        {"protocol": "tcp", "destinations": ["10.0.0.1", "10.0.0.2", "fd00::2"], "ports": [443]},
        {"protocol": "tcp", "destinations": ["10.0.0.1"], "ports": [5000]},
    ]
    for rule in rules:
        validate_rule(rule)


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ({"protocol": "tcp", "destinations": [], "ports": [1]}, "at least one destination"),
        ({"protocol": "tcp", "destinations": ["1.2.3.4"]}, "exactly one"),
        (
            {
                "protocol": "tcp",
                "destinations": ["1.2.3.4"],
                "ports": [1],
                "port_range": {"start": 1, "end": 2},
            },
            "exactly one",
        ),
        ({"protocol": "tcp", "destinations": ["1.2.3.4"], "ports": [0]}, "between 1 and 65535"),
        ({"protocol": "sctp", "destinations": ["1.2.3.4"], "ports": [1]}, "invalid protocol"),
        ({"protocol": "tcp", "destinations": ["not-an-ip"], "ports": [1]}, "does not appear"),
    ],
)
def test_bbs_validation(rule: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        validate_rule(rule)


def rules_of(run) -> list[dict]:
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def egress(tailor, host: str, *more: str, allow: str = "127.0.0.0/8", name: str = "team/app:1"):
    """`tailor egress-rules` for image ``name`` on the plain-HTTP registry ``host``, whose
    network the probe is allowed to reach."""
    image = f"{host}/{name}"
    flags = ["--insecure-registry", host, "--outbound-allow", allow]
    return tailor("egress-rules", "--image", image, *flags, *more)


def ports_to(rules: list[dict], address: str) -> set[int]:
    return {p for r in rules if address in r["destinations"] for p in r["ports"]}


@pytest.fixture
@markers.applies("registry")
def realm_elsewhere(tmp_path: Path) -> Iterator[tuple[Registry, TokenServer]]:
    server = TokenServer(UPSTREAM_USER, UPSTREAM_PASSWORD, tmp_path / "tok", bind="127.0.0.3")
    reg = start_registry(tmp_path / "reg", token=server.registry_auth())
    yield reg, server
    reg.stop()
    server.stop()


def test_a_realm_on_another_host(realm_elsewhere: tuple[Registry, TokenServer], tailor) -> None:
    reg, server = realm_elsewhere
    run = egress(
        tailor,
        reg.host,
        "--broker",
        "http://127.0.0.1:8443",
        "--internal-registry",
        "127.0.0.5",
        "--explain",
    )
    rules = rules_of(run)
    port = int(reg.host.rsplit(":", 1)[1])
    realm_port = int(server.host.rsplit(":", 1)[1])
    assert ports_to(rules, "127.0.0.3") == {realm_port}
    assert ports_to(rules, "127.0.0.1") == {8443, port}
    assert ports_to(rules, "127.0.0.5") == {443}  # a TLS registry unless named insecure
    assert "upstream token realm: 127.0.0.3" in run.stderr


def test_a_blob_redirect_host(tmp_path: Path, skopeo: Skopeo, tailor) -> None:
    reg = start_registry(tmp_path / "anon")
    layout = Layout(tmp_path / "layout")
    layout.tag("v1", image(layout, seed=61, layers=1))
    skopeo.push(layout, "v1", f"{reg.host}/pub/app:v1", all_platforms=False)
    storage = Storage(reg.blob_path, host="127.0.0.2")
    proxy = Proxy(reg.host)
    proxy.faults.redirect_to = storage.url
    try:
        run = egress(tailor, proxy.host, name="pub/app:v1")
        rules = rules_of(run)
        assert ports_to(rules, "127.0.0.2") == {int(storage.url.rsplit(":", 1)[1])}
        assert ports_to(rules, "127.0.0.1") == {int(proxy.host.rsplit(":", 1)[1])}
    finally:
        proxy.stop()
        storage.stop()
        reg.stop()


@pytest.mark.registry
def test_ipv6_registry(tmp_path: Path, tailor) -> None:
    reg = start_registry(tmp_path / "v6", host="::1")
    try:
        run = egress(tailor, reg.host, allow="::1/128")
        rules = rules_of(run)
        assert ports_to(rules, "::1") == {int(reg.host.rsplit(":", 1)[1])}
    finally:
        reg.stop()


def test_an_unresolvable_name_is_one_clear_line(internal: Registry, tailor) -> None:
    run = egress(tailor, internal.host, "--broker", "https://no-such-broker.invalid")
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "tailor: error: cannot resolve 'no-such-broker.invalid': no address for that name"
    )
