"""The shipped HAProxy config re-sends only what never reached a replica (issue 12.2).

Seen: `retry-on conn-failure empty-response response-timeout` re-sent a request
when a replica died after committing and before answering; the copy carried the
same, now spent, client assertion, so the caller got 401 although the action
had happened. Here two little replicas behind `docs/deploy/haproxy.cfg` (its
timeouts a hundred times shorter) take a POST and never answer it: one closes
the connection (a replica killed after its commit), one stays silent past the
server timeout. The POST must reach exactly one replica, and the caller must
get HAProxy's own error for the lost answer, never a second delivery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from tests.support.haproxy import run_haproxy, shipped_config
from tests.support.httpserver import reply, serve
from tests.support.processes import free_port

pytestmark = pytest.mark.slow


def replica(seen: list[str], lose: Callable[[BaseHTTPRequestHandler], None]) -> object:
    """Ready for the health check; takes every POST (records it) and loses its answer."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        if h.command == "GET":
            reply(h, 200, b"{}")
            return
        h.rfile.read(int(h.headers.get("Content-Length", "0")))
        seen.append(h.path)
        lose(h)

    return handler


def die(h: BaseHTTPRequestHandler) -> None:
    """Committed, then killed: the connection closes with no answer."""
    h.close_connection = True


def hang(h: BaseHTTPRequestHandler) -> None:
    """Committed, then stuck past the balancer's server timeout."""
    time.sleep(5)
    h.close_connection = True


def shipped_on(backends: tuple[str, str], port: int) -> str:
    """The shipped config on loopback over ``backends``, its timeouts a hundred times shorter."""
    return shipped_config(
        [
            (r"bind :8443\b", lambda m: f"bind 127.0.0.1:{port}"),
            (r"bind :5000\b", lambda m: f"bind 127.0.0.1:{free_port()}"),
            (r"server broker1 \S+", lambda m: f"server broker1 {backends[0]}"),
            (r"server broker2 \S+", lambda m: f"server broker2 {backends[1]}"),
            (r"(server registry\d+) \S+", lambda m: f"{m[1]} 127.0.0.1:{free_port()}"),
            (r"(timeout [\w-]+) (\d+)s\b", lambda m: f"{m[1]} {int(m[2]) * 10}ms"),
        ]
    )


@pytest.mark.parametrize("lose", [die, hang], ids=["replica-dies", "replica-hangs"])
def test_a_request_that_reached_a_replica_is_not_sent_again(
    tmp_path: Path, lose: Callable[[BaseHTTPRequestHandler], None]
) -> None:
    seen: list[str] = []
    handler = replica(seen, lose)
    with serve(handler) as a, serve(handler, host="127.0.0.2") as b:  # type: ignore[arg-type]
        port = free_port()
        run_haproxy(tmp_path, "retries", shipped_on((a, b), port), f"http://127.0.0.1:{port}/")
        time.sleep(0.5)  # both replicas seen up by the health checks (inter 10 ms)
        seen.clear()
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/redemptions", json={"token": "t"}, timeout=30
        )
    assert seen == ["/v1/redemptions"], f"the request reached {len(seen)} replicas"
    assert answer.status_code in (502, 504), answer.status_code
