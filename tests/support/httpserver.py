"""A little real HTTP server on loopback whose behaviour is one plain handler function."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handler = Callable[[BaseHTTPRequestHandler], None]


def reply(
    h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


@contextmanager
def serve(
    handler: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Yield ``host:port`` of a server calling ``handler`` for every request (over TLS
    with ``tls``, a server context)."""

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            handler(self)

        do_HEAD = do_GET
        do_POST = do_GET
        do_PUT = do_GET
        do_DELETE = do_GET

    httpd = ThreadingHTTPServer((host, 0), H)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"{host}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def trickler(
    stop: threading.Event,
    *,
    length: int = 100_000,
    seconds: float = 30.0,
    on_hold: Callable[[], None] = lambda: None,
) -> Handler:
    """A tarpit: answers 200 with a ``length``-byte body it sends a byte every 0.1 s,
    until ``stop`` is set, the client goes or ``seconds`` pass (``on_hold`` is called
    once the head is sent)."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        on_hold()
        for _ in range(int(seconds * 10)):
            if stop.wait(0.1):
                return
            try:
                h.wfile.write(b" ")
                h.wfile.flush()
            except OSError:
                return

    return handler
