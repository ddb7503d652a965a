"""Registry tokens while tarpit registries hold egress probes (issue 11.1).

A `broker serve` on PostgreSQL; an upstream "registry" on loopback that answers
``/v2/`` with a body it trickles a byte at a time; ``--probes`` stagings of it
whose egress rules are all asked for at once. Meanwhile a cell's client asks for
``/v1/registry-token`` one request after another. Printed: its latency without
the probes and with them (p50, p95, max; a request that takes longer than
``--give-up`` seconds counts as stalled), and the ratio.

    python -m bench.egress [--probes 48] [--requests 40] [--give-up 15]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests

from tests.support import ROOT
from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.brokerproc import broker_env, provision, start_broker
from tests.support.clients import new_clients
from tests.support.httpserver import serve, trickler


def pg_url() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh")], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def latencies(url: str, headers: object, n: int, give_up: float) -> list[float]:
    """``n`` registry-token requests one after another; seconds each (``give_up`` if so)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            r = requests.get(
                url + "/v1/registry-token",
                params={"service": "internal-registry"},
                headers=headers(),  # type: ignore[operator]
                timeout=give_up,
            )
            assert r.status_code == 200, r.text
            out.append(time.perf_counter() - t0)
        except requests.Timeout:
            out.append(give_up)
    return out


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2] * 1000
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000
    return f"p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  max {ordered[-1] * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=48)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--give-up", type=float, default=15.0)
    args = parser.parse_args()

    stop = threading.Event()
    held = [0]

    def hold() -> None:
        held[0] += 1

    base = pg_url()
    schema = "bench_" + str(int(time.time()))
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    db = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    clients = new_clients()
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(trickler(stop, length=1_000_000, seconds=120, on_hold=hold)) as tarpit_host,
    ):
        env = broker_env(Path(tmp), db, "http://127.0.0.1:1")
        env.update(
            BROKER_OUTBOUND_ALLOW="127.0.0.0/8",
            BROKER_INSECURE_REGISTRIES=tarpit_host,
            BROKER_EGRESS_PROBE_SECONDS="60",
        )
        provision(env, Path(tmp), clients.all())
        broker = start_broker(env, Path(tmp) / "broker.log", self_audience=True)
        url = broker.url
        try:
            for n in range(args.probes):
                body = staging_token_body(
                    staging_guid=f"t{n}",
                    image=f"{tarpit_host}/t/app:1",
                    username=None,
                    password=None,
                    tailor=clients.tailor.name,
                )
                r = requests.post(
                    url + STAGING_TOKENS, headers=clients.cc.headers(url), json=body, timeout=30
                )
                assert r.status_code == 201, r.text

            def headers() -> dict[str, str]:
                return clients.puller.headers(url)

            quiet = latencies(url, headers, args.requests, args.give_up)
            answers: list[int] = []

            def probe(n: int) -> None:
                try:
                    r = requests.get(
                        f"{url}/v1/stagings/t{n}/egress-rules",
                        headers=clients.cc.headers(url),
                        timeout=120,
                    )
                    answers.append(r.status_code)
                except requests.RequestException:
                    answers.append(0)

            threads = [
                threading.Thread(target=probe, args=(n,), daemon=True) for n in range(args.probes)
            ]
            for t in threads:
                t.start()
            time.sleep(2)
            busy = latencies(url, headers, args.requests, args.give_up)
            holding = held[0]
            refused = answers.count(503)
        finally:
            stop.set()
            broker.stop()
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"registry-token, {args.requests} requests in a row, broker on PostgreSQL")
    print(f"  no probes:                 {summary(quiet)}")
    print(f"  {args.probes} tarpit probes asked: {summary(busy)}")
    print(
        f"  probes the tarpit held: {holding}; refused at once (503): {refused}; "
        f"stalled token requests (>{args.give_up:g} s): {sum(v >= args.give_up for v in busy)}"
    )
    p50 = sorted(busy)[len(busy) // 2] / sorted(quiet)[len(quiet) // 2]
    print(f"  p50 with probes / p50 without: {p50:.2f}")


if __name__ == "__main__":
    main()
