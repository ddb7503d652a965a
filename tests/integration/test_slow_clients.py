"""Slow clients (issue #11.5): a live ``broker serve`` cuts a client that sends its request
head or body too slowly and refuses a head that is too large; HAProxy on the shipped config
cuts slow requests too; both go on answering other clients meanwhile. Raw sockets, short
deadlines (the broker's through its settings, HAProxy's by scaling the shipped file)."""

from __future__ import annotations

import os
import re
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.broker_api import mint
from tests.support.brokerproc import BrokerProcess, broker_env, provision, start_broker
from tests.support.clients import Clients
from tests.support.haproxy import run_haproxy, shipped_config
from tests.support.processes import free_port

pytestmark = pytest.mark.slow


HEAD_S = 1.0  # BROKER_HEADER_TIMEOUT_SECONDS of the test broker
BODY_S = 1.5  # BROKER_BODY_TIMEOUT_SECONDS: apart from HEAD_S, to tell which deadline cut
SLACK = 2.5  # how late a cut may come on a busy machine
LIMIT = 6.0  # how long a test waits for a cut that does not come
EVERY = 0.2  # seconds between two drips of a slow client

HEAD = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
BODY_HEAD = (
    b"POST /v1/staging-tokens HTTP/1.1\r\nHost: t\r\n"
    b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
)


class Slow:
    """A client on a non-blocking socket that sends ``first``, then (once it has received
    ``wait_for``) ``then`` and one ``drip`` per tick, and never finishes; it notes what the
    server sent and when the server closed the connection (``ended``: seconds after it
    connected)."""

    def __init__(
        self,
        addr: tuple[str, int],
        first: bytes,
        drip: bytes,
        wait_for: bytes = b"",
        then: bytes = b"",
    ) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex(addr)
        self.started = time.monotonic()
        self.pending = first
        self.drip = drip
        self.wait_for = wait_for
        self.then = then
        self.received = b""
        self.ended: float | None = None

    def tick(self) -> None:
        if self.ended is not None:
            return
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
            self._end()  # end of stream: the server closed
            return
        except BlockingIOError:
            pass  # nothing to read yet (or still connecting)
        except OSError:
            self._end()  # reset or refused
            return
        if not self.pending:
            if self.wait_for not in self.received:
                return
            self.pending, self.then = self.then, b""
        try:
            sent = self.sock.send(self.pending or self.drip)
        except BlockingIOError:
            return
        except OSError:
            self._end()
            return
        self.pending = self.pending[sent:]

    def _end(self) -> None:
        self.ended = time.monotonic() - self.started
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def until_ended(self, limit: float = LIMIT) -> Slow:
        """Tick until the server closes, at most ``limit`` seconds."""
        while self.ended is None and time.monotonic() - self.started < limit:
            self.tick()
            if self.ended is None:
                select.select([self.sock], [], [], EVERY)
        self.close()
        return self

    def __repr__(self) -> str:
        return f"<slow ended={self.ended} received={self.received[:80]!r}>"


@contextmanager
def trickling(slows: list[Slow]) -> Iterator[None]:
    """Keep ``slows`` dripping from a thread of their own."""
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            for s in slows:
                s.tick()
            done.wait(EVERY)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
        for s in slows:
            s.close()


def addr_of(url_or_host: str) -> tuple[str, int]:
    host, _, port = url_or_host.removeprefix("http://").rpartition(":")
    return host, int(port)


def answered(url: str, limit: float, timeout: float = 1.0) -> requests.Response | None:
    """The first answer to ``GET url`` within ``limit`` seconds, trying again on errors."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=timeout)
        except requests.RequestException:
            time.sleep(0.1)
    return None


def memory(pid: int) -> dict[str, int]:
    """The process's resident memory now and at its peak, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


# --- broker serve --------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path, clients: Clients) -> BrokerProcess:
    """``broker serve`` with deadlines of HEAD_S and BODY_S and the default header cap."""
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", "http://unused")
    provision(env, tmp_path, clients.all())
    env.update(BROKER_HEADER_TIMEOUT_SECONDS=str(HEAD_S), BROKER_BODY_TIMEOUT_SECONDS=str(BODY_S))
    return start_broker(env, tmp_path / "broker.log", self_audience=True)


def test_a_header_over_the_cap_is_refused_at_once_and_never_held(broker: BrokerProcess) -> None:
    assert requests.get(broker.url + "/healthz", timeout=5).status_code == 200  # warmed up
    before = memory(broker.proc.pid)
    size = 20 * 1024 * 1024
    started = time.monotonic()
    sock = socket.create_connection(addr_of(broker.url), timeout=10)
    sent = 0
    try:
        sock.sendall(HEAD + b"X-Big: ")
        while sent < size:
            sent += sock.send(b"a" * (1024 * 1024))
    except OSError:
        pass  # the broker closed the connection under us
    got, closed = b"", False
    sock.settimeout(0.2)
    while time.monotonic() - started < LIMIT:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            closed = True  # reset: the 431 may be lost with it
            break
        got += chunk
        if not chunk:
            closed = True
            break
    elapsed = time.monotonic() - started
    after = memory(broker.proc.pid)
    sock.close()
    grew = {k: after[k] - before[k] for k in after}
    assert closed, f"still open after {elapsed:.1f} s; {sent} bytes sent; memory grew {grew}"
    assert elapsed < 3, elapsed
    assert got == b"" or got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert grew["VmRSS"] < size / 4 and grew["VmHWM"] < size / 4, grew
    assert requests.get(broker.url + "/healthz", timeout=5).status_code == 200


OK = b'{"status":"ok"}'  # the end of the answer to HEAD


@pytest.mark.parametrize(
    ("first", "drip", "wait_for", "then"),
    [
        pytest.param(b"", b"", b"", b"", id="silent"),
        pytest.param(HEAD, b"X-Slow: 1\r\n", b"", b"", id="trickled-head"),
        pytest.param(HEAD + b"\r\n", b"X-Slow: 1\r\n", OK, HEAD, id="kept-alive"),
        # Blank lines before a request line are skipped (RFC 9112 2.2): no request begins.
        pytest.param(HEAD + b"\r\n", b"\r\n", OK, b"", id="kept-alive-blank-lines"),
        pytest.param(HEAD + b"\r\n" + HEAD, b"X-Slow: 1\r\n", b"", b"", id="pipelined"),
    ],
)
def test_a_request_head_not_received_in_time_is_cut(
    broker: BrokerProcess, first: bytes, drip: bytes, wait_for: bytes, then: bytes
) -> None:
    """Silent after connecting, a head a line at a time (on a new connection, on one kept
    alive after an answer, behind a pipelined request), blank lines on a kept-alive
    connection: 408 and closed at the head deadline."""
    slow = Slow(addr_of(broker.url), first, drip, wait_for, then).until_ended()
    assert slow.ended is not None, f"still open after {LIMIT} s"
    assert HEAD_S - 0.1 <= slow.ended <= HEAD_S + SLACK, slow
    answers = re.findall(rb"HTTP/1\.1 (\d+) ", slow.received)
    assert answers == [b"200"] * first.count(b"\r\n\r\n") + [b"408"], slow


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        pytest.param(BODY_HEAD, b"HTTP/1.1 408 ", id="while-read"),
        # Declared over BROKER_MAX_BODY_BYTES: 413 at once, then the body is only discarded.
        pytest.param(
            BODY_HEAD.replace(b"4000", b"999999"), b"HTTP/1.1 413 ", id="after-an-early-answer"
        ),
    ],
)
def test_a_body_not_received_in_time_is_cut(
    broker: BrokerProcess, head: bytes, answer: bytes
) -> None:
    """A body a byte at a time, read by the app or discarded after its early answer: cut at
    the body deadline (counted from the head), with 408 unless an answer has begun."""
    slow = Slow(addr_of(broker.url), head, b" ").until_ended()
    assert slow.ended is not None, f"still open after {LIMIT} s: {slow.received[:200]!r}"
    assert BODY_S - 0.1 <= slow.ended <= BODY_S + SLACK, slow
    assert slow.received.startswith(answer), slow
    assert slow.received.count(b"HTTP/1.1 ") == 1, slow  # nothing after an answer begun


def test_others_are_answered_while_slow_clients_hang(
    broker: BrokerProcess, clients: Clients
) -> None:
    """More slow clients than the broker has file descriptors left (a small limit stands in
    for thousands of sockets; a connection the broker has no descriptor for is accepted and
    dropped by the event loop): they are cut at their deadlines, and others are answered."""
    pid = broker.proc.pid
    spare = 30
    limit = len(os.listdir(f"/proc/{pid}/fd")) + spare
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    addr = addr_of(broker.url)
    kinds = [(b"", b""), (HEAD, b"X-Slow: 1\r\n"), (BODY_HEAD, b" ")]
    slows = [Slow(addr, *kinds[i % 3]) for i in range(2 * spare)]
    with trickling(slows):
        time.sleep(0.3)
        taken = len(os.listdir(f"/proc/{pid}/fd"))
        assert taken >= limit - 1, (taken, limit)  # they hold every descriptor the broker has
        probe = answered(broker.url + "/healthz", limit=BODY_S + SLACK + 2)
        assert probe is not None and probe.status_code == 200, slows
        minted = mint(broker.url, clients.cc)
        assert minted.status_code == 201, minted.text
        deadline = time.monotonic() + LIMIT
        while any(s.ended is None for s in slows) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert all(s.ended is not None for s in slows), [s for s in slows if s.ended is None]
    # Those the broker took (others it could not accept) it held to their deadline.
    held = [s.ended for s in slows if s.ended and s.received.startswith(b"HTTP/1.1 408 ")]
    assert len(held) >= spare // 2 and min(held) >= HEAD_S - 0.1, slows


# --- HAProxy with the shipped config ---------------------------------------------------------


@dataclass
class Shipped:
    brokers: str  # host:port of the frontend brokers_in
    registries: str  # of registries_in (no registry behind it: HAProxy itself answers 503)


def scaled(slower: int, broker: str, dead: str, ports: tuple[int, int]) -> str:
    """The shipped config on loopback, its timeouts ``slower`` times and its connection
    limits forty times smaller (as a test can afford to wait and to open sockets)."""
    return shipped_config(
        [
            (r"bind :8443\b", lambda m: f"bind 127.0.0.1:{ports[0]}"),
            (r"bind :5000\b", lambda m: f"bind 127.0.0.1:{ports[1]}"),
            (r"(server broker\d+) \S+", lambda m: f"{m[1]} {broker}"),
            (r"(server registry\d+) \S+", lambda m: f"{m[1]} {dead}"),
            (r"(timeout [\w-]+) (\d+)s\b", lambda m: f"{m[1]} {int(m[2]) * 1000 // slower}ms"),
            (r"maxconn (\d+)", lambda m: f"maxconn {int(m[1]) // 40}"),
        ]
    )


def start_shipped(tmp_path: Path, slower: int) -> Shipped:
    """A broker (default deadlines: only HAProxy can cut within a test's wait) behind HAProxy
    running ``docs/deploy/haproxy.cfg``, scaled."""
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", "http://unused")
    provision(env, tmp_path, [])
    broker = start_broker(env, tmp_path / "broker.log").url.removeprefix("http://")
    ports = (free_port(), free_port())
    dead = f"127.0.0.1:{free_port()}"
    config = scaled(slower, broker, dead, ports)
    run_haproxy(tmp_path, "shipped", config, f"http://127.0.0.1:{ports[0]}/healthz")
    front = Shipped(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}")
    deadline = time.monotonic() + 10  # until the health check has seen the broker up
    while requests.get(f"http://{front.brokers}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the broker is not up behind HAProxy"
        time.sleep(0.1)
    return front


REQUEST_S = 1.0  # the shipped timeout http-request (10 s), ten times shorter


@pytest.mark.parametrize(
    ("frontend", "first", "drip"),
    [
        pytest.param("brokers", HEAD, b"X-Slow: 1\r\n", id="brokers-head"),
        pytest.param("registries", HEAD, b"X-Slow: 1\r\n", id="registries-head"),
        pytest.param("brokers", BODY_HEAD, b" ", id="brokers-body"),
    ],
)
def test_haproxy_cuts_a_trickling_request_and_answers_others(
    tmp_path: Path, frontend: str, first: bytes, drip: bytes
) -> None:
    shipped = start_shipped(tmp_path, slower=10)
    slow = Slow(addr_of(getattr(shipped, frontend)), first, drip)
    with trickling([slow]):
        time.sleep(REQUEST_S / 2)
        normal = requests.get(f"http://{shipped.brokers}/healthz", timeout=5)
        assert normal.status_code == 200
        deadline = time.monotonic() + LIMIT
        while slow.ended is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert slow.ended is not None, f"still open after {LIMIT} s"
    assert REQUEST_S - 0.1 <= slow.ended <= REQUEST_S + SLACK, slow
    assert slow.received.startswith(b"HTTP/1.1 408 "), slow


def test_haproxy_a_flood_on_one_frontend_leaves_the_other_answering(tmp_path: Path) -> None:
    """More slow clients on brokers_in than the whole proxy's maxconn: the registries'
    frontend still answers (each frontend has a maxconn of its own). Timeouts as shipped, so
    that no slow client is cut while the test looks."""
    shipped = start_shipped(tmp_path, slower=1)
    slows = [Slow(addr_of(shipped.brokers), HEAD, b"X-Slow: 1\r\n") for _ in range(150)]
    with trickling(slows):
        time.sleep(0.5)
        for _ in range(3):
            probe = answered(f"http://{shipped.registries}/v2/", limit=2)
            assert probe is not None, "registries_in does not answer"
            assert probe.status_code == 503  # HAProxy's own: no registry behind it
            time.sleep(0.3)
        assert not any(s.ended for s in slows), "a slow client was cut: the test proves nothing"


_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in Linux's struct tcp_info (since 4.6)


def _data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[_DATA_SEGS_IN : _DATA_SEGS_IN + 4], "little")


def test_an_answer_goes_out_in_one_write(broker: BrokerProcess) -> None:
    """A small answer's head and body leave in one segment, where uvicorn writes them apart
    (two segments, two wake-ups of the client for every answer): counted on the client's
    socket over answers read one at a time on one keep-alive connection."""
    host, port = broker.url.removeprefix("http://").split(":")
    answers = 20
    with socket.create_connection((host, int(port)), timeout=LIMIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        before = _data_segments_in(sock)
        for _ in range(answers):
            sock.sendall(HEAD + b"\r\n")
            got = b""
            while not (b"\r\n\r\n" in got and got.endswith(b"}")):  # /healthz: a JSON object
                chunk = sock.recv(65536)
                assert chunk, "the broker closed the connection"
                got += chunk
            assert got.startswith(b"HTTP/1.1 200") and got.count(b"HTTP/1.1") == 1
        segments = _data_segments_in(sock) - before
    assert segments == answers, f"{segments} data segments for {answers} answers"
