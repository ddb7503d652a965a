"""One guarded client for requests made on someone else's say-so.

A server that fetches what a user names (the registry of an image pushed with
``cf push --docker-image``) must not become that user's way into its own network.
Every such request goes through a ``Probe``:

- **Hosts pinned.** A probe talks only to the hosts it was opened for (the
  registry's own host name, any port). A redirect or a token realm on another
  host is refused before any connection, so nothing a probe learned is sent to a
  host the user chose after the fact.
- **Addresses checked after DNS resolution,** at each connection, and the socket
  goes to the address that was checked (no second lookup a rebinding DNS server
  could answer differently). Refused unless the operator allows its network:
  anything not globally routable (loopback, private, link-local, shared
  100.64/10, unique-local, unspecified, ...), multicast, cloud metadata
  addresses, IPv6 forms that embed a refused IPv4 address (mapped, 6to4, NAT64),
  and any address of this machine's own interfaces.
- **One deadline** for the whole probe, connect and read together: a watchdog
  shuts every socket of the probe when it passes, so a registry that trickles a
  byte at a time cannot hold the probe longer than that.
- No proxy and no ``.netrc`` from the environment.

``fetch`` is one document through a probe (prune's desired-LRP list): https
unless allowed, redirects only on the URL's own host and never to http, a size cap.

``AddressPolicy.addresses`` is the same check for names a probe does not connect
to (a realm on another host, a blob host), so that what is reported as
reachable is only ever what the guard would allow.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from tailor.errors import ConfigError, TransportError
from tailor.transport import MAX_REDIRECTS, REDIRECTS

__all__ = [
    "AddressPolicy",
    "DeadlineExceeded",
    "Probe",
    "Refused",
    "Unresolvable",
    "fetch",
    "parse_networks",
    "resolve_name",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Global addresses that are nonetheless a cloud's metadata or platform endpoint.
_METADATA = tuple(
    ipaddress.ip_network(n)
    for n in (
        "168.63.129.16/32",  # Azure WireServer
        "192.0.0.192/32",  # Oracle Cloud metadata
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): a translator of this site
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(TransportError):
    """A destination the outbound policy does not allow (or a host the probe is not for)."""


class Unresolvable(Refused):
    """A name with no address: a ``Refused`` for callers that treat every destination they
    cannot use alike, told apart by those that report an unknown name as unreachable."""


class DeadlineExceeded(TransportError):
    """The probe's deadline passed."""


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8,fd00::/8`` (or a list of them) -> networks; a clear error otherwise."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"not a network in CIDR notation: {item!r}") from None
    return tuple(out)


def _is_own(address: Address) -> bool:
    """True when ``address`` is on one of this machine's interfaces: only then can a
    socket bind to it (a kernel that binds non-local addresses would say True too)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(address), 0))
    except OSError:
        return False
    return True


def _embedded(address: Address) -> Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if it carries one."""
    if address.version != 6:
        return None
    assert isinstance(address, ipaddress.IPv6Address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def resolve_name(host: str, port: int) -> list[str]:
    """Every address ``host`` has now (IPv4 and IPv6, no zone); ``Unresolvable`` if none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Unresolvable(f"cannot resolve {host!r}: no address for that name") from None
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses outbound requests may go to: the public internet, and the
    networks the operator allows (``allow``), which win over every refusal."""

    allow: tuple[Network, ...] = ()
    resolver: Resolver = field(default=resolve_name, compare=False, repr=False)

    def refusal(self, text: str) -> str | None:
        """Why ``text`` (an IP address) is refused, or None when it is allowed."""
        address = ipaddress.ip_address(text)
        if any(address in n for n in self.allow if n.version == address.version):
            return None
        inner = _embedded(address)
        if inner is not None:
            why = self.refusal(str(inner))
            return None if why is None else f"it embeds {inner}: {why}"
        if not address.is_global:
            return "not a public address"
        if address.is_multicast:
            return "a multicast address"
        if any(address in n for n in _METADATA if n.version == address.version):
            return "a cloud metadata address"
        if _is_own(address):
            return "an address of this machine"
        return None

    def addresses(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, all allowed; ``Refused`` names the first that is not."""
        bare = host.strip("[]")
        try:
            found = [str(ipaddress.ip_address(bare))]
        except ValueError:
            found = self.resolver(bare, port)
        if not found:
            raise Unresolvable(f"cannot resolve {host!r}: no address for that name")
        for address in found:
            why = self.refusal(address)
            if why is not None:
                raise Refused(
                    f"{host} ({address}) is not an allowed destination: {why} "
                    "(the operator can allow its network)"
                )
        return found


class Probe:
    """One bounded conversation with ``hosts``: pinned, address-checked, one deadline.

    Use as a context manager; ``session()`` gives requests sessions that go only
    through the guard (hand it to ``Transport(sessions=...)``)."""

    def __init__(
        self,
        policy: AddressPolicy,
        hosts: Iterable[str],
        deadline: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.hosts = frozenset(h.strip("[]").lower() for h in hosts)
        self.seconds = deadline
        self._clock = clock
        self._ends = clock() + deadline
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._sessions: list[requests.Session] = []
        self._expired = False
        self._timer = threading.Timer(deadline, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def remaining(self) -> float:
        return self._ends - self._clock()

    @property
    def expired(self) -> bool:
        return self._expired or self.remaining() <= 0

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets = list(self._sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._timer.cancel()
        for session in self._sessions:
            session.close()
        self._expire()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            s.close()

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A socket to ``host:port`` if the guard allows it, within the deadline."""
        if host.strip("[]").lower() not in self.hosts:
            raise Refused(f"{host} is not a host this request may reach (a redirect or realm)")
        if self.expired:
            raise DeadlineExceeded(f"no answer from {host} within {self.seconds:g} s")
        last: OSError | None = None
        for address in self.policy.addresses(host, port):
            left = self.remaining()
            if left <= 0:
                break
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            with self._lock:
                if self._expired:
                    s.close()
                    break
                self._sockets.append(s)
            s.settimeout(left if timeout is None else min(left, timeout))
            try:
                s.connect((address, port))
            except OSError as exc:
                last = exc
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        if self.expired:
            raise DeadlineExceeded(f"no answer from {host} within {self.seconds:g} s")
        raise OSError(f"cannot connect to {host}:{port}") from last

    def session(self) -> requests.Session:
        """A requests session whose every connection is made by ``connect``."""
        session = requests.Session()
        session.trust_env = False  # no proxy, no .netrc
        adapter = _GuardedAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._sessions.append(session)
        return session


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        super().__init__(pool_connections=2, pool_maxsize=4, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        probe = self._probe

        def new_conn(conn: HTTPConnection) -> socket.socket:
            timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
            return probe.connect(conn.host, conn.port or 0, timeout)

        http_conn = type("GuardedHTTPConnection", (HTTPConnection,), {"_new_conn": new_conn})
        https_conn = type("GuardedHTTPSConnection", (HTTPSConnection,), {"_new_conn": new_conn})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type(
                "GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}
            ),
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise Refused("outbound requests use no proxy")


def fetch(
    url: str,
    *,
    policy: AddressPolicy,
    deadline: float,
    max_bytes: int,
    allow_http: bool = False,
    verify: bool | str = True,
) -> bytes:
    """GET one document through the guard: https unless ``allow_http``, redirects
    followed on the URL's own host only and never from https to http, at most
    ``max_bytes`` (``Refused`` beyond), all within ``deadline``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise Refused("a URL with credentials in it is refused (they would be logged)")
    if parts.scheme == "http" and not allow_http:
        raise Refused(f"plain HTTP to {parts.hostname} is refused: use https (or allow it)")
    with Probe(policy, [parts.hostname], deadline) as probe:
        session = probe.session()
        for _ in range(MAX_REDIRECTS + 1):
            answer = session.get(
                url, allow_redirects=False, stream=True, timeout=deadline, verify=verify
            )
            with answer:
                location = answer.headers.get("Location")
                if answer.status_code in REDIRECTS and location:
                    target = urljoin(url, location)
                    if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                        raise Refused(f"{parts.hostname} redirected from https to another scheme")
                    url = target
                    continue  # another host: the probe refuses it
                if answer.status_code != 200:
                    raise TransportError(f"{parts.hostname} answered {answer.status_code}")
                body = answer.raw.read(max_bytes + 1, decode_content=True)
                if len(body) > max_bytes:
                    raise Refused(
                        f"the answer from {parts.hostname} is larger than {max_bytes} bytes"
                    )
                return bytes(body)
        raise Refused(f"{parts.hostname}: too many redirects")
