"""Guessing pull credentials through the shipped HAProxy config: the guesser is stopped at
the balancer, and a cell pulling from another address is not slowed by the flood.

A real ``broker serve`` behind ``docs/deploy/haproxy.cfg`` (timeouts a hundred times
shorter, as in test_balancer_retries): an app with a completed staging and its pull
credential; one source sends wrong secrets, another asks with the right one.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
from pathlib import Path

import pytest
import requests

from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.brokerproc import broker_env, provision, start_broker
from tests.support.clients import Clients
from tests.support.haproxy import run_haproxy, shipped_config
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.slow


def ask(port: int, source: str, user: str, secret: str) -> int:
    """A token request from ``source`` (a loopback address of its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
        conn.request(
            "GET",
            "/v1/registry-token?service=internal-registry",
            headers={"Authorization": f"Basic {basic}"},
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_guesser_is_stopped_at_the_balancer_and_cells_pull_on(
    tmp_path: Path, clients: Clients
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", url)
    provision(env, tmp_path, clients.all())
    broker = start_broker(env, tmp_path / "broker.log")
    backend = broker.url.removeprefix("http://")
    config = shipped_config(
        [
            (r"bind :8443\b", lambda m: f"bind 127.0.0.1:{port}"),
            (r"bind :5000\b", lambda m: f"bind 127.0.0.1:{free_port()}"),
            (r"server (broker\d+) \S+", lambda m: f"server {m[1]} {backend}"),
            (r"(server registry\d+) \S+", lambda m: f"{m[1]} 127.0.0.1:{free_port()}"),
            (r"(timeout [\w-]+) (\d+)s\b", lambda m: f"{m[1]} {int(m[2]) * 10}ms"),
        ]
    )
    balancer = run_haproxy(tmp_path, "guessing", config, f"{url}/healthz")
    try:
        time.sleep(2.5)  # the health checks (inter 1s, rise 2) see the broker up
        cc, tailor = clients.cc, clients.tailor
        body = staging_token_body(staging_guid="s1", username=None, password=None,
                                  tailor=tailor.name)  # fmt: skip
        token = requests.post(url + STAGING_TOKENS, headers=cc.headers(url), json=body,
                              timeout=10).json()["token"]  # fmt: skip
        for path, payload in (("/v1/redemptions", {"token": token}),
                              ("/v1/stagings/s1/complete", {"status": "succeeded"})):  # fmt: skip
            r = requests.post(url + path, headers=tailor.headers(url), json=payload, timeout=10)
            assert r.status_code == 200, r.text
        cred = requests.post(f"{url}/v1/apps/app-1/pull-credentials", headers=cc.headers(url),
                             timeout=10).json()  # fmt: skip
        user, secret = cred["username"], cred["password"]
        wrong = secret[:-6] + ("AAAAAA" if not secret.endswith("AAAAAA") else "BBBBBB")

        guesses = [ask(port, "127.0.0.1", user, wrong) for _ in range(40)]
        assert set(guesses) == {401, 429}, guesses
        reached = guesses.count(401)
        assert 20 <= reached <= 22 and guesses[reached:] == [429] * (40 - reached), guesses
        assert ask(port, "127.0.0.1", user, secret) == 429  # the guesser's address, for now
        # A cell elsewhere pulls on, while the guesser keeps trying.
        for _ in range(10):
            assert ask(port, "127.0.0.1", user, wrong) == 429
            assert ask(port, "127.0.0.2", user, secret) == 200

        metrics = requests.get(broker.url + "/metrics", timeout=10).text
        counted = re.search(
            r'stager_client_auth_failures_total\{reason="pull_credential"\} (\d+)', metrics
        )
        assert counted and int(counted[1]) == reached  # the rest never reached a broker
        assert secret not in (tmp_path / "haproxy-guessing.log").read_text()
        assert json.dumps(secret)[1:-1] not in broker.log.read_text()
    finally:
        stop(balancer)
        broker.stop()
