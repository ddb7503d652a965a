"""A fault-injecting TCP proxy in front of a real PostgreSQL (test-only): answers that are lost.

It forwards PostgreSQL's wire protocol unchanged, reading its framing both ways (the
startup packet, then typed messages: a type byte and a length). Armed with a ``marker``
(a piece of SQL, e.g. ``UPDATE stagings SET state='redeemed'``), it cuts the first
connection that executes a statement containing the marker, once per arming:

- ``cut="commit"``: the connection's next COMMIT goes to PostgreSQL, the proxy waits for
  PostgreSQL's whole answer to it (CommandComplete, ReadyForQuery), withholds it and
  closes both sides. PostgreSQL has committed; the client saw its COMMIT sent and its
  connection drop. What each withheld answer said is in ``withheld``.
- ``cut="statement"``: the marked statement itself is not forwarded; both sides are
  closed. PostgreSQL rolls the open transaction back: nothing was done.

It reads the messages, so it answers an SSLRequest or a GSSENCRequest itself with ``N``
(no encryption); :attr:`PgProxy.url` is the upstream URL pointed at the proxy, with
``sslmode=disable`` and ``gssencmode=disable``. Threads are daemons; :meth:`stop` closes
every socket and joins them.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["PgProxy", "pg_proxy"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_MAX_MESSAGE = 1 << 30
_CUTS = ("commit", "statement")


class _Closed(Exception):
    """The peer closed its side (or the proxy closed it)."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 16))
        if not chunk:
            raise _Closed()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed message: (type byte, body)."""
    head = _recv_exact(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    if not 4 <= length <= _MAX_MESSAGE:
        raise _Closed()  # not the protocol: stop relaying
    return head[:1], _recv_exact(sock, length - 4)


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstring(data: bytes) -> tuple[bytes, bytes]:
    """The NUL-terminated string at the start of ``data``, and what follows it."""
    text, _, rest = data.partition(b"\0")
    return text, rest


def _is_commit(query: bytes) -> bool:
    return query.strip().rstrip(b";").strip().upper() in (b"COMMIT", b"COMMIT TRANSACTION", b"END")


def _is_rollback(query: bytes) -> bool:
    return query.strip().rstrip(b";").strip().upper().startswith(b"ROLLBACK")


class _Link:
    """One client connection and its connection to PostgreSQL."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.statements: dict[bytes, bytes] = {}  # prepared statement name -> query
        self.portals: dict[bytes, bytes] = {}  # portal name -> query
        self.marked = False  # the armed marker ran in the open transaction
        self.cutting = False  # the COMMIT is with PostgreSQL: withhold its answer, then cut
        self._closed = False
        self._lock = threading.Lock()

    def executed(self, kind: bytes, body: bytes) -> bytes | None:
        """The SQL a frontend message executes now (simple Query, or extended Execute);
        Parse and Bind are remembered for the Execute that follows them."""
        if kind == b"Q":
            return _cstring(body)[0]
        if kind == b"P":
            name, rest = _cstring(body)
            self.statements[name] = _cstring(rest)[0]
        elif kind == b"B":
            portal, rest = _cstring(body)
            self.portals[portal] = self.statements.get(_cstring(rest)[0], b"")
        elif kind == b"E":
            return self.portals.get(_cstring(body)[0], b"")
        return None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class PgProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._backend = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # the accept loop looks at the stop flag this often
        port = self._listener.getsockname()[1]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("sslmode", "gssencmode")
        ]
        query += [("sslmode", "disable"), ("gssencmode", "disable")]
        self.url = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
        """The upstream URL, through the proxy and unencrypted."""
        self.withheld: list[list[str]] = []
        """Per commit cut: what PostgreSQL answered the COMMIT with ("C COMMIT", "E ...")."""
        self.cut = threading.Event()
        """Set at each cut (clear it to wait for the next)."""
        self._lock = threading.Lock()
        self._armed: tuple[bytes, str] | None = None
        self._links: set[_Link] = set()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._start(self._accept_loop, "pgproxy-accept")

    def arm(self, marker: str, *, cut: str = "commit") -> None:
        """Cut the next connection that executes SQL containing ``marker`` (see the module)."""
        assert cut in _CUTS, cut
        with self._lock:
            self._armed = (marker.encode(), cut)

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed is not None

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- the relay ------------------------------------------------------------------------

    def _start(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener is closed: stopping
            client.settimeout(None)
            try:
                server = socket.create_connection(self._backend, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):  # one message per send: no Nagle delays
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                if self._stop.is_set():
                    link.close()
                    return
                self._links.add(link)
            self._start(self._from_client, "pgproxy-client", link)
            self._start(self._from_server, "pgproxy-server", link)

    def _done(self, link: _Link) -> None:
        link.close()
        with self._lock:
            self._links.discard(link)

    def _from_client(self, link: _Link) -> None:
        try:
            if not self._startup(link):
                while data := link.client.recv(1 << 16):  # a CancelRequest: pass it on
                    link.server.sendall(data)
                return
            while True:
                kind, body = _read_message(link.client)
                query = link.executed(kind, body)
                if query is not None and self._cut_here(link, query):
                    return  # the statement is not forwarded
                link.server.sendall(_frame(kind, body))
        except (_Closed, OSError):
            pass
        finally:
            if not link.cutting:  # a commit cut ends on the server side, after the answer
                self._done(link)

    def _startup(self, link: _Link) -> bool:
        """Relay the startup packet (no type byte); refuse encryption ourselves. False for
        a CancelRequest, whose connection carries nothing else."""
        while True:
            head = _recv_exact(link.client, 8)
            length, code = struct.unpack("!ii", head)
            if not 8 <= length <= 10_000:
                raise _Closed()
            packet = head + _recv_exact(link.client, length - 8)
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                link.client.sendall(b"N")  # no encryption: the client goes on in the clear
                continue
            link.server.sendall(packet)
            return code != _CANCEL_REQUEST

    def _cut_here(self, link: _Link, query: bytes) -> bool:
        """Watch what the connection executes; True to drop the connection instead of
        forwarding ``query`` (a statement cut)."""
        with self._lock:
            armed = self._armed
            if armed is not None and armed[0] in query:
                if armed[1] == "statement":
                    self._armed = None
                    self.cut.set()
                    return True
                link.marked = True
            elif _is_commit(query) and link.marked:
                link.marked = False
                if armed is not None and armed[1] == "commit":
                    self._armed = None
                    link.cutting = True  # before the COMMIT leaves: its answer is withheld
            elif _is_rollback(query):
                link.marked = False
        return False

    def _from_server(self, link: _Link) -> None:
        held: list[str] = []
        try:
            while True:
                kind, body = _read_message(link.server)
                if not link.cutting:
                    link.client.sendall(_frame(kind, body))
                    continue
                if kind == b"C":
                    held.append("C " + _cstring(body)[0].decode(errors="replace"))
                elif kind == b"E":
                    held.append("E " + body.decode(errors="replace"))
                if kind == b"Z":  # PostgreSQL has done the COMMIT and waits for more: cut
                    with self._lock:
                        self.withheld.append(held)
                    self.cut.set()
                    return
        except (_Closed, OSError):
            pass
        finally:
            self._done(link)


@contextmanager
def pg_proxy(upstream_url: str) -> Iterator[PgProxy]:
    proxy = PgProxy(upstream_url)
    try:
        yield proxy
    finally:
        proxy.stop()
