"""A flood of wrong pull-credential secrets against a cell's pulls (issue 13).

A `broker serve` (SQLite, or PostgreSQL with ``--postgres``); an app with a completed
staging and its pull credential. A cell asks ``/v1/registry-token`` with the right
credential, one request after another: quiet, then while ``--flooders`` threads send
wrong secrets as fast as they can. Printed: the cell's latency both ways (p50, p95,
max), the ratio, and how many wrong guesses the broker refused meanwhile.

    python -m bench.pullcreds [--requests 200] [--flooders 8] [--postgres]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests

from bench.egress import pg_url, summary
from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.brokerproc import broker_env, provision, start_broker
from tests.support.clients import new_clients

SCOPE = "repository:staging/app-1/s1:pull"


def latencies(url: str, auth: tuple[str, str], n: int) -> list[float]:
    out = []
    with requests.Session() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            r = session.get(
                url + "/v1/registry-token",
                params={"service": "internal-registry", "scope": SCOPE},
                auth=auth,
                timeout=30,
            )
            assert r.status_code == 200, r.text
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()

    clients = new_clients()
    schema = base = ""
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'broker.sqlite'}"
        if args.postgres:
            base, schema = pg_url(), f"bench_{int(time.time())}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            opts = quote(f"-csearch_path={schema}")
            db = f"{base}{'&' if '?' in base else '?'}options={opts}"
        env = broker_env(Path(tmp), db, "http://127.0.0.1:1")
        provision(env, Path(tmp), clients.all())
        broker = start_broker(env, Path(tmp) / "broker.log", self_audience=True)
        url = broker.url
        stop = threading.Event()
        refused = [0]
        try:
            body = staging_token_body(staging_guid="s1", username=None, password=None,
                                      tailor=clients.tailor.name)  # fmt: skip
            token = requests.post(url + STAGING_TOKENS, headers=clients.cc.headers(url),
                                  json=body, timeout=30).json()["token"]  # fmt: skip
            tailor = clients.tailor.headers
            requests.post(url + "/v1/redemptions", headers=tailor(url), json={"token": token},
                          timeout=30).raise_for_status()  # fmt: skip
            requests.post(url + "/v1/stagings/s1/complete", headers=tailor(url),
                          json={"status": "succeeded"}, timeout=30).raise_for_status()  # fmt: skip
            cred = requests.post(url + "/v1/apps/app-1/pull-credentials",
                                 headers=clients.cc.headers(url), timeout=30).json()  # fmt: skip
            right = (cred["username"], cred["password"])
            wrong = (cred["username"], cred["password"][:-6] + "AAAAAA")
            latencies(url, right, 20)  # warm
            quiet = latencies(url, right, args.requests)

            def flood() -> None:
                with requests.Session() as session:
                    while not stop.is_set():
                        r = session.get(url + "/v1/registry-token",
                                        params={"service": "internal-registry"},
                                        auth=wrong, timeout=30)  # fmt: skip
                        assert r.status_code == 401
                        refused[0] += 1

            threads = [threading.Thread(target=flood, daemon=True) for _ in range(args.flooders)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            before, t0 = refused[0], time.perf_counter()
            busy = latencies(url, right, args.requests)
            rate = (refused[0] - before) / (time.perf_counter() - t0)
        finally:
            stop.set()
            broker.stop()
            if schema:
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(f"registry-token with an app's pull credential, {args.requests} in a row, {store}")
    print(f"  quiet:                          {summary(quiet)}")
    print(f"  {args.flooders} threads of wrong secrets:    {summary(busy)}")
    print(f"  wrong secrets refused meanwhile: {rate:.0f}/s")
    ratio = sorted(busy)[len(busy) // 2] / sorted(quiet)[len(quiet) // 2]
    print(f"  p50 flooded / p50 quiet: {ratio:.2f}")


if __name__ == "__main__":
    main()
