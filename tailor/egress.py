"""Egress rules for a staging task behind deny-all: which holes it needs, found at run time.

Discovery (``discover``) probes the upstream registry: its ``/v2/`` challenge names
the token realm's host, and one blob read (when the image is readable without
credentials) shows where blobs are redirected. Every name is resolved to its
addresses now. ``security_group_rules`` turns (host, port) pairs into the BBS
``SecurityGroupRule`` JSON the platform uses, validated and merged. Pure but for
``discover`` and ``resolve``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from tailor.challenge import parse_challenge
from tailor.errors import ConfigError, TailorError
from tailor.manifest import ACCEPT, MAX_MANIFEST, Manifest, parse_manifest
from tailor.reference import Reference
from tailor.transport import InsecureHosts

__all__ = ["Endpoint", "discover", "resolve", "security_group_rules", "validate_rule"]

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Endpoint:
    """A host the staging must reach, why, and on which TCP port."""

    host: str
    port: int
    why: str


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` has now (IPv4 and IPv6); a clear error when it has none."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"cannot resolve {host!r}: no address for that name") from None
    return sorted({str(info[4][0]) for info in infos})


def _host_port(netloc: str, scheme: str) -> tuple[str, int]:
    parts = urlsplit(f"{scheme}://{netloc}")
    host = parts.hostname or ""
    return host, parts.port or (443 if scheme == "https" else 80)


def discover(
    image: Reference,
    *,
    broker_url: str | None = None,
    internal_registry: str | None = None,
    insecure: InsecureHosts | None = None,
    timeout: float = 10.0,
) -> list[Endpoint]:
    """The endpoints one staging of ``image`` talks to."""
    insecure = insecure or InsecureHosts()
    out: list[Endpoint] = []
    if broker_url:
        parts = urlsplit(broker_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"broker URL must be http(s)://HOST[:PORT], got {broker_url!r}")
        out.append(
            Endpoint(
                parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), "broker"
            )
        )
    if internal_registry:
        scheme = "http" if insecure(internal_registry) else "https"
        host, port = _host_port(internal_registry, scheme)
        out.append(Endpoint(host, port, "internal registry"))
    scheme = "http" if insecure(image.endpoint) else "https"
    host, port = _host_port(image.endpoint, scheme)
    out.append(Endpoint(host, port, "upstream registry"))
    session = requests.Session()
    session.trust_env = False
    base = f"{scheme}://{image.endpoint}"
    try:
        ping = session.get(f"{base}/v2/", timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise TailorError(f"cannot reach {image.endpoint}: {type(exc).__name__}") from None
    challenge = parse_challenge(ping.headers.get("WWW-Authenticate"))
    if challenge and challenge.params.get("realm"):
        realm = urlsplit(challenge.params["realm"])
        if realm.scheme in ("http", "https") and realm.hostname:
            out.append(
                Endpoint(
                    realm.hostname,
                    realm.port or (443 if realm.scheme == "https" else 80),
                    "upstream token realm",
                )
            )
    out += _blob_storage(session, base, image, timeout)
    return out


def _get_manifest(
    session: requests.Session, base: str, image: Reference, ref: str, timeout: float
) -> Manifest | None:
    answer = session.get(
        f"{base}/v2/{image.repository}/manifests/{ref}",
        headers={"Accept": ACCEPT},
        timeout=timeout,
        stream=True,
        allow_redirects=False,
    )
    with answer:
        if answer.status_code != 200:
            return None
        # Capped: a hostile registry cannot make us hold more than a manifest's worth.
        raw = answer.raw.read(MAX_MANIFEST + 1, decode_content=True)
    return parse_manifest(raw, answer.headers.get("Content-Type"))


def _blob_storage(
    session: requests.Session, base: str, image: Reference, timeout: float
) -> list[Endpoint]:
    """Follow one blob read to see where blobs live, if the image is readable anonymously."""
    try:
        manifest = _get_manifest(session, base, image, image.identifier, timeout)
        if manifest is not None and manifest.is_index and manifest.children:
            manifest = _get_manifest(session, base, image, manifest.children[0].digest, timeout)
        blobs = manifest.blobs() if manifest is not None else []
        if not blobs:
            return []
        blob = session.get(
            f"{base}/v2/{image.repository}/blobs/{blobs[0].digest}",
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        blob.close()
    except (requests.RequestException, TailorError):
        return []
    redirected = blob.status_code in (301, 302, 303, 307, 308)
    location = blob.headers.get("Location", "") if redirected else ""
    target = urlsplit(location)
    if not target.hostname or target.scheme not in ("http", "https"):
        return []
    port = target.port or (443 if target.scheme == "https" else 80)
    return [Endpoint(target.hostname, port, "blob storage")]


def validate_rule(rule: dict[str, object]) -> None:
    """BBS's own checks on a SecurityGroupRule (models/security_group.go)."""
    protocol = rule.get("protocol")
    if protocol not in ("tcp", "udp", "icmp", "all"):
        raise ValueError(f"invalid protocol {protocol!r}")
    destinations = rule.get("destinations")
    if not isinstance(destinations, list) or not destinations:
        raise ValueError("a rule needs at least one destination")
    for d in destinations:
        ipaddress.ip_network(str(d), strict=False)
    if protocol in ("tcp", "udp"):
        ports, port_range = rule.get("ports"), rule.get("port_range")
        if (ports is None) == (port_range is None):
            raise ValueError("exactly one of ports and port_range")
        if ports is not None:
            if not isinstance(ports, list) or not ports:
                raise ValueError("ports must be a non-empty list")
            if any(not isinstance(p, int) or not 1 <= p <= 65535 for p in ports):
                raise ValueError("ports must be between 1 and 65535")


def security_group_rules(
    endpoints: Iterable[Endpoint], resolver: Resolver = resolve, log: bool = False
) -> list[dict[str, object]]:
    """One rule per port, its destinations merged, every name resolved to addresses."""
    by_port: dict[int, set[str]] = {}
    for ep in endpoints:
        by_port.setdefault(ep.port, set()).update(resolver(ep.host, ep.port))
    # Ports that go to the same destinations share one rule.
    by_dests: dict[tuple[str, ...], list[int]] = {}
    for port in sorted(by_port):
        dests = tuple(sorted(by_port[port], key=lambda a: (":" in a, a)))
        by_dests.setdefault(dests, []).append(port)
    rules: list[dict[str, object]] = []
    for dests, ports in sorted(by_dests.items(), key=lambda kv: kv[1]):
        rule: dict[str, object] = {"protocol": "tcp", "destinations": list(dests), "ports": ports}
        if log:
            rule["log"] = True
        validate_rule(rule)
        rules.append(rule)
    return rules
