"""The Tailor's broker client: where it agrees to send what a redemption carries."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tailor.assertion import ClientKey
from tailor.broker_client import BrokerClient, BrokerError

KEY = ClientKey("tailor", ed25519.Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    "url",
    [
        "https://broker.platform.internal",
        "https://10.0.0.5:8443/",
        "http://127.0.0.1:8080",
        "http://127.9.9.9",
        "http://[::1]:8080",
        "http://localhost:8080",
    ],
)
def test_https_or_loopback_is_accepted(url: str) -> None:
    assert BrokerClient(url, KEY).url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://broker.platform.internal", "http://10.0.0.5:8080", "http://[fd00::1]"]
)
def test_plain_http_across_a_network_needs_the_operators_say_so(url: str) -> None:
    with pytest.raises(BrokerError, match="refusing plain HTTP to the broker"):
        BrokerClient(url, KEY)
    assert BrokerClient(url, KEY, allow_http=True).url == url


@pytest.mark.parametrize("url", ["ftp://broker", "broker:8080", "https://", "http:///x"])
def test_not_a_broker_url(url: str) -> None:
    with pytest.raises(BrokerError, match="broker URL must be"):
        BrokerClient(url, KEY)


class KeepAliveServer:
    """An HTTP/1.1 server that keeps connections alive for ``keep_alive`` seconds, and
    whose close at that moment crosses the next request: a request arriving on a
    connection idle that long is read and the connection closed without an answer, as
    when uvicorn's keep-alive timer fires while the request is on its way."""

    def __init__(self, keep_alive: float) -> None:
        self.keep_alive = keep_alive
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.answered = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            idle_since = time.monotonic()
            while True:
                head = [reader.readline()]
                while head[-1] not in (b"\r\n", b""):
                    head.append(reader.readline())
                if head[-1] == b"":
                    return
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head
                        if h.lower().startswith(b"content-length")
                    ),
                    0,
                )
                reader.read(length)
                if time.monotonic() - idle_since >= self.keep_alive:
                    return  # closed at the keep-alive timeout, the request unanswered
                body = b'{"state": "open"}'
                self.answered += 1  # before the client can see the answer
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                idle_since = time.monotonic()

    def close(self) -> None:
        self.sock.close()


def test_a_connection_idle_near_the_servers_keep_alive_is_not_reused() -> None:
    """Was: the second request went on the kept-alive connection the server closed just
    then, and failed with "cannot reach the broker"."""
    server = KeepAliveServer(keep_alive=2.5)
    try:
        client = BrokerClient(server.url, KEY)
        assert client.lookup("t") == {"state": "open"}
        assert client.lookup("t") == {"state": "open"}  # kept alive: the same connection
        assert server.connections == 1
        time.sleep(2.6)
        assert client.lookup("t") == {"state": "open"}
        assert (server.connections, server.answered) == (2, 3)
    finally:
        server.close()
