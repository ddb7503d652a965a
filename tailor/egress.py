"""Egress rules for a staging task behind deny-all: which holes it needs, found at run time.

Discovery (``discover``) probes the upstream registry through the outbound guard
(``tailor/outbound.py``): only the registry's own host, only allowed addresses,
one deadline. Its ``/v2/`` challenge names the token realm's host, and one blob
read (when the image is readable without credentials, or with an anonymous token
from a realm on the registry's own host) shows where blobs are redirected. A
realm or blob host on another host is never contacted, only named; one whose
addresses the guard would refuse is left out of the rules (``Endpoint.refused``
says why). ``security_group_rules`` turns endpoints into the BBS
``SecurityGroupRule`` JSON the platform uses, validated and merged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tailor.authn import ANONYMOUS
from tailor.errors import AuthError, ConfigError, RegistryError, TailorError
from tailor.outbound import AddressPolicy, Probe, Refused, resolve_name
from tailor.reference import Reference
from tailor.registry import Repository
from tailor.retry import RetryPolicy
from tailor.transport import InsecureHosts, Transport

__all__ = ["Endpoint", "discover", "resolve", "security_group_rules", "validate_rule"]

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Endpoint:
    """A host the staging must reach, why, and on which TCP port.

    ``addresses``: the ones the guard checked (empty: resolve when the rules are made,
    for the platform's own hosts). ``refused``: why the guard would not allow it; such
    an endpoint is reported, never put in a rule."""

    host: str
    port: int
    why: str
    addresses: tuple[str, ...] = ()
    refused: str | None = None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` has now (IPv4 and IPv6); a clear error when it has none."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    try:
        return resolve_name(host, port)
    except Refused as exc:
        raise ConfigError(str(exc)) from None


def _host_port(netloc: str, scheme: str) -> tuple[str, int]:
    parts = urlsplit(f"{scheme}://{netloc}")
    host = parts.hostname or ""
    return host, parts.port or (443 if scheme == "https" else 80)


def _url_endpoint(url: str, why: str, policy: AddressPolicy) -> Endpoint | None:
    """The endpoint an absolute http(s) URL names, checked by the guard (never contacted)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    try:
        addresses = tuple(policy.addresses(parts.hostname, port))
    except Refused as exc:
        return Endpoint(parts.hostname, port, why, refused=str(exc))
    return Endpoint(parts.hostname, port, why, addresses)


def discover(
    image: Reference,
    *,
    policy: AddressPolicy,
    broker_url: str | None = None,
    internal_registry: str | None = None,
    insecure: InsecureHosts | None = None,
    deadline: float = 10.0,
    signature_storage: str | None = None,
) -> list[Endpoint]:
    """The endpoints one staging of ``image`` talks to (``signature_storage``: the
    lookaside URL the staging policy reads signatures from, when it is http(s)). Raises
    ``TailorError`` when the upstream registry is not an allowed destination or gives no
    answer in ``deadline``."""
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
    out.append(Endpoint(host, port, "upstream registry", tuple(policy.addresses(host, port))))
    with Probe(policy, [host], deadline) as probe:
        # The same client the staging uses (its scheme choice, realm checks and caps),
        # its connections made by the probe.
        upstream = Transport(
            image.endpoint,
            ANONYMOUS,
            insecure,
            policy=RetryPolicy(attempts=2),
            timeout=(deadline, deadline),
            sessions=probe.session,
        )
        try:
            challenge = upstream.ping()
        except (AuthError, RegistryError):
            challenge = None  # an odd /v2/ answer: no realm to open
        if challenge and challenge.params.get("realm"):
            realm = _url_endpoint(challenge.params["realm"], "upstream token realm", policy)
            out += [realm] if realm else []
        out += _blob_storage(upstream, image, policy)
    if signature_storage:
        lookaside = _url_endpoint(signature_storage, "signature storage", policy)
        out += [lookaside] if lookaside else []
    return out


def _blob_storage(upstream: Transport, image: Reference, policy: AddressPolicy) -> list[Endpoint]:
    """Look at one blob read to see where blobs live, if the image is readable anonymously."""
    repo = Repository(upstream, image.repository)
    try:
        manifest = repo.get_manifest(image.identifier)
        if manifest.is_index and manifest.children:
            manifest = repo.get_manifest(manifest.children[0].digest)
        blobs = manifest.blobs()
        if not blobs:
            return []
        blob = upstream.request(
            "GET",
            f"/v2/{image.repository}/blobs/{blobs[0].digest}",
            scopes=repo.scopes,
            what="a blob",
            ok=(200, 301, 302, 303, 307, 308),
            follow=False,
        )
        blob.close()
    except TailorError:
        return []
    location = blob.headers.get("Location", "") if blob.status_code != 200 else ""
    found = _url_endpoint(location, "blob storage", policy) if location else None
    return [found] if found else []


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
    """One rule per port, its destinations merged, every name resolved to addresses.
    An endpoint the guard refused is in no rule."""
    by_port: dict[int, set[str]] = {}
    for ep in endpoints:
        if ep.refused is not None:
            continue
        addresses = ep.addresses or tuple(resolver(ep.host, ep.port))
        by_port.setdefault(ep.port, set()).update(addresses)
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
