"""Broker benchmark: mint+redeem round trips against `broker serve`, beside a bare endpoint.

Both servers run the same way (uvicorn with httptools, one process, loopback); the same load
generator drives both: two client processes, keep-alive connections, client
assertions signed before the clock starts so client CPU is not measured.

    python -m bench.broker [--seconds 4] [--levels 1,8,32] [--database-url URL]

``--replicas N`` (N >= 2; needs ``--database-url postgresql://...``) runs the same load
against N ``broker serve`` replicas (one keys folder, one PostgreSQL, a fresh schema of the
run's own, dropped after) behind Debian's HAProxy (roundrobin, keep-alive), instead of the
bare endpoint. At each level it measures one replica direct, one replica through HAProxy
(the proxy's own cost) and N replicas through HAProxy, and prints the ratio N replicas /
one replica through HAProxy (issue #17's target: >= 1.5), met or missed, with where the
CPU went (brokers, HAProxy, this schema's PostgreSQL backends, all of PostgreSQL, the load
generator, the whole machine):

    python -m bench.broker --replicas 2 --levels 8,32 --database-url postgresql://...

The load generator, HAProxy, PostgreSQL and every broker share this machine's cores (two
where the figures in docs/performance.md were taken): more replicas only add throughput
while there is CPU left for them.

``--preload`` instead compares two brokers (each with ``--workers`` workers), one on an
empty store and one on a store filled first as a long-running broker's would be
(bench/preload.py: 1,000,000 audit events, integrated, and 100,000 closed stagings with
their history, by default), alternating runs at each level (8 clients by default) for
``--rounds`` rounds, and prints the median p99 redeem of each and their ratio (issue #17's
target: <= 1.2):

    python -m bench.broker --preload [--preload-events N] [--preload-stagings N]
        [--rounds 3] [--database-url postgresql://...]

``--compare-http`` instead serves the broker's app once per HTTP protocol and prints the
median server CPU per request of each, from alternating batches of small POSTs (a 1 KB
head, refused at the assertion), each batch on one keep-alive connection:

    python -m bench.broker --compare-http httptools,serve,h11 [--batches 12] [--batch 1000]

A protocol is a name of uvicorn's (``httptools``, ``h11``), ``serve`` (the one
``broker serve`` runs) or ``module:attr`` (a protocol class, or a function of the
settings returning one, as ``broker.api.httpguard:guarded_protocol``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.schema import fresh_schema
from tests.support.brokerproc import (
    BrokerProcess,
    broker_cli,
    broker_env,
    children,
    start_broker,
)
from tests.support.clients import Client, new_client
from tests.support.haproxy import run_haproxy
from tests.support.processes import free_port, stop, wait_http

PUBLIC = "https://broker.bench"
BARE_APP = """
from fastapi import FastAPI
from pydantic import BaseModel

class Body(BaseModel):
    token: str

app = FastAPI()

@app.post("/echo")
def echo(body: Body) -> dict[str, str]:
    return {"token": body.token, "state": "ok"}
"""


class Conn:
    """A keep-alive JSON client on http.client: far lighter than requests, so the load
    generator leaves more of the two cores to the server under test."""

    def __init__(self, url: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        self.conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)

    def post(
        self, path: str, body: object, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        import json

        data = json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        self.conn.request("POST", path, body=data, headers=sent)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_fine(pid: int) -> float:
    """As :func:`cpu_seconds`, to the nanosecond (the scheduler's time on a CPU, all of the
    process's threads; the clock ticks of ``stat`` are 10 ms)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


Round = Callable[["Conn", int, int], tuple[float, float]]


def timed_threads(
    url: str, threads: int, per_thread: int, start_at: float, one_round: Round
) -> tuple[list[tuple[float, float]], float]:
    """``threads`` keep-alive clients, all starting at ``start_at``, each running
    ``one_round(conn, thread, i)`` until ``per_thread`` rounds or the time is up; the
    rounds' times, and this process's CPU seconds from ``start_at`` to the end."""
    results: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop_at = start_at + BENCH_SECONDS.value

    def run(t: int) -> None:
        conn = Conn(url)
        mine = []
        while time.time() < start_at:
            time.sleep(0.001)
        for i in range(per_thread):
            if time.time() >= stop_at:
                break
            mine.append(one_round(conn, t, i))
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = time.process_time()
    for w in workers:
        w.join()
    return results, time.process_time() - cpu0


def broker_worker(args: tuple[str, int, int, float, bytes, bytes, int, mp.Queue]) -> None:
    url, threads, per_thread, start_at, cc_pem, tailor_pem, seed, out = args
    from cryptography.hazmat.primitives import serialization

    from tests.support.clients import Client

    cc = Client("cc", "cc", serialization.load_pem_private_key(cc_pem, None))  # type: ignore[arg-type]
    tailor = Client("tailor", "tailor", serialization.load_pem_private_key(tailor_pem, None))  # type: ignore[arg-type]
    # Assertions are signed before the clock starts: client CPU is not measured.
    plans = [
        [(cc.headers(PUBLIC), tailor.headers(PUBLIC)) for _ in range(per_thread)]
        for _ in range(threads)
    ]

    def mint_and_redeem(conn: Conn, t: int, i: int) -> tuple[float, float]:
        h_cc, h_tailor = plans[t][i]
        body = {
            "app_guid": "app",
            "staging_guid": f"b{seed}-{t}-{i}",
            "image": "registry.bench/app:1",
            "username": "u",
            "password": "bench-password",
            "tailor": "tailor",
        }
        t0 = time.perf_counter()
        status, minted = conn.post("/v1/staging-tokens", body, h_cc)
        t1 = time.perf_counter()
        if status != 201:
            raise SystemExit(f"mint failed: {status} {minted}")
        status, got = conn.post("/v1/redemptions", {"token": minted["token"]}, h_tailor)
        t2 = time.perf_counter()
        if status != 200:
            raise SystemExit(f"redeem failed: {status} {got.get('type')}")
        return t1 - t0, t2 - t1

    out.put(timed_threads(url, threads, per_thread, start_at, mint_and_redeem))


def bare_worker(args: tuple[str, int, int, float, int, mp.Queue]) -> None:
    url, threads, per_thread, start_at, _seed, out = args

    def two_posts(conn: Conn, t: int, i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        a, _ = conn.post("/echo", {"token": "x" * 200})
        t1 = time.perf_counter()
        b, _ = conn.post("/echo", {"token": "y" * 200})
        t2 = time.perf_counter()
        assert a == b == 200
        return t1 - t0, t2 - t1

    out.put(timed_threads(url, threads, per_thread, start_at, two_posts))


BENCH_SECONDS = mp.Value("d", 4.0)


def serve_as(http: str, port: str) -> None:
    """Serve the broker's app as ``broker serve`` does, over the protocol ``http`` (see the
    module's docstring)."""
    import uvicorn

    from broker.api.app import create_app
    from broker.api.httpguard import guarded_protocol
    from broker.logs import log_config
    from broker.settings import get_settings

    settings = get_settings()
    protocol: Any = http
    if http == "serve":
        protocol = guarded_protocol(settings)
    elif ":" in http:
        module, _, attr = http.partition(":")
        protocol = getattr(importlib.import_module(module), attr)
        if not isinstance(protocol, type):
            protocol = protocol(settings)
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=int(port),
        log_config=log_config(settings.log_level),
        server_header=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
        http=protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,  # for h11 protocols
    )


def compare_http(
    env: dict[str, str], root: Path, names: list[str], batches: int, batch: int
) -> None:
    """Median server CPU per small POST of the broker's app over each protocol in ``names``;
    batches of ``batch`` requests alternate between the servers (their order rotates)."""
    import http.client
    import json

    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    logs = contextlib.ExitStack()
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + "x" * 900,  # not an assertion: refused at once (401)
    }
    body = json.dumps(
        {
            "app_guid": "app",
            "staging_guid": "s",
            "image": "registry.bench/app:1",
            "username": "u",
            "password": "bench-password",
            "tailor": "tailor",
        }
    ).encode()
    try:
        for name in names:
            port = free_port()
            log = logs.enter_context((root / f"serve-{len(servers)}.log").open("ab"))
            code = "import sys; from bench.broker import serve_as; serve_as(*sys.argv[1:])"
            proc = subprocess.Popen(
                [sys.executable, "-c", code, name, str(port)], env=env, stdout=log, stderr=log
            )
            servers[name] = (proc, port)
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)

        def run(name: str, count: int) -> float:
            """``count`` requests on a new keep-alive connection (the last one went idle
            while the other servers ran); the server's CPU seconds per request."""
            proc, port = servers[name]
            conn = http.client.HTTPConnection("127.0.0.1", port)
            cpu0 = cpu_seconds_fine(proc.pid)
            for _ in range(count):
                conn.request("POST", "/v1/staging-tokens", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 401:
                    raise SystemExit(f"{name}: {response.status}, not 401")
            cpu = cpu_seconds_fine(proc.pid) - cpu0
            conn.close()
            return 1000 * cpu / count

        for name in names:
            run(name, batch // 4)  # warm up
        per_request: dict[str, list[float]] = {n: [] for n in names}
        for i in range(batches):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                per_request[name].append(run(name, batch))
        print(f"server CPU per request, {batches} alternating batches of {batch} small POSTs")
        print(f"{'http':>40} {'median':>8} {'min':>8} {'max':>8} {'/' + names[0]:>12}")
        for name, values in per_request.items():
            cells = [statistics.median(values), min(values), max(values)]
            # The median of the ratios within a round: the machine's drift cancels out.
            ratios = [v / b for v, b in zip(values, per_request[names[0]], strict=True) if b]
            ratio = statistics.median(ratios) if ratios else float("nan")
            print(f"{name:>40} " + " ".join(f"{v:>6.3f}ms" for v in cells) + f" {ratio:>12.2f}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        logs.close()


CpuProbe = Callable[[], dict[str, float]]


def drive(
    kind: str, url: str, level: int, keys: tuple[bytes, bytes], seed: int, cpu: CpuProbe
) -> dict[str, Any]:
    """One run at ``level`` clients. ``cpu()`` returns CPU seconds by name, ``"server"`` the
    server's; each name's difference over the run is returned in ``"cpu"`` (a name only
    the second reading has counts from zero: a process that started during the run), with
    the load generator's own as ``"load generator"``."""
    procs_n = min(2, level)
    per_proc = [level // procs_n + (1 if i < level % procs_n else 0) for i in range(procs_n)]
    per_thread = int(4000 * BENCH_SECONDS.value / 4 / max(1, level)) + 50
    start_at = time.time() + 1.5 + 0.02 * level  # time to sign assertions first
    out: mp.Queue = mp.Queue()
    procs = []
    for i, threads in enumerate(per_proc):
        if kind == "broker":
            a = (url, threads, per_thread, start_at, keys[0], keys[1], seed * 10 + i, out)
            p = mp.Process(target=broker_worker, args=(a,))
        else:
            b = (url, threads, per_thread, start_at, seed * 10 + i, out)
            p = mp.Process(target=bare_worker, args=(b,))
        p.start()
        procs.append(p)
    results: list[tuple[float, float]] = []
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = cpu()
    generator = 0.0
    for _ in procs:
        rounds, spent = out.get(timeout=120)
        results.extend(rounds)
        generator += spent
    cpu1 = cpu()
    used = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
    used["load generator"] = generator
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"{kind} load worker failed")
    elapsed = BENCH_SECONDS.value
    first = [r[0] for r in results]
    second = [r[1] for r in results]
    return {
        "round_trips_s": len(results) / elapsed,
        "requests_s": 2 * len(results) / elapsed,
        "p50_first": pct(first, 0.50),
        "p99_first": pct(first, 0.99),
        "p50_second": pct(second, 0.50),
        "p99_second": pct(second, 0.99),
        "cpu_ms": 1000 * used["server"] / max(1, 2 * len(results)),
        "cpu": used,
    }


def bench_env(env: dict[str, str]) -> None:
    env["BROKER_LOG_LEVEL"] = "WARNING"
    # The broker's own cost, not the upstream registry's: with the exchange on (the
    # default) every mint and redemption also asks the image's registry, network I/O
    # this benchmark's made-up registry cannot answer (a DNS lookup each, some of which
    # a busy resolver answers only after its 5 s retry).
    env["BROKER_UPSTREAM_EXCHANGE"] = "false"


def provision_clients(
    env: dict[str, str], root: Path, given: tuple[Client, Client] | None = None
) -> tuple[Client, Client]:
    """`broker keys init`, and the two clients the load generator signs as (new ones, or
    ``given``)."""
    cc, tailor = given or (new_client("cc", "cc"), new_client("tailor", "tailor"))
    broker_cli(env, "keys", "init")
    for c in (cc, tailor):
        r = broker_cli(
            env,
            "clients",
            "add",
            c.name,
            "--role",
            c.role,
            "--public-key",
            str(c.write_public(root)),
        )
        if r.returncode != 0:
            raise SystemExit(r.stderr)
    return cc, tailor


def server_cpu(pid: int) -> CpuProbe:
    return lambda: {"server": cpu_seconds(pid)}


def tree_cpu(pid: int) -> CpuProbe:
    """The CPU of process ``pid`` and its children (``broker serve --workers N``: the
    supervising parent and its workers); a worker that ended meanwhile is not counted."""

    def probe() -> dict[str, float]:
        total = 0.0
        for one in [pid, *children(pid)]:
            with contextlib.suppress(OSError):
                total += cpu_seconds(one)
        return {"server": total}

    return probe


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on this machine (whoever they serve), and of
    the backends their postmaster has reaped."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, rest = (entry / "stat").read_text().rpartition(")")
        except OSError:
            continue  # ended meanwhile
        if head.partition("(")[2] == "postgres":
            stats[int(entry.name)] = rest.split()
    total = 0
    for fields in stats.values():
        total += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in stats:  # the postmaster: its reaped children's time too
            total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """Core-seconds this machine's CPUs have spent not idle (``/proc/stat``)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


HAPROXY = """
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend one_in
    bind 127.0.0.1:{one}
    default_backend one
frontend all_in
    bind 127.0.0.1:{all}
    default_backend all
backend one
    server b0 {first}
backend all
    balance roundrobin
{servers}
"""


def replicas_bench(database_url: str, replicas: int, levels: list[int], seconds: float) -> None:
    """Mint+redeem pairs at each level against one replica direct, one through HAProxy, and
    ``replicas`` through HAProxy (see the module's docstring)."""
    import psycopg

    with (
        tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp,
        fresh_schema(database_url) as (url, schema),
    ):
        root = Path(tmp)
        env = broker_env(root, url, PUBLIC)
        bench_env(env)
        cc, tailor = provision_clients(env, root)
        keys = (cc.private_pem, tailor.private_pem)
        brokers: list[BrokerProcess] = []
        haproxy: subprocess.Popen[bytes] | None = None
        try:
            # One after the other: the first one migrates the fresh schema.
            for i in range(replicas):
                brokers.append(start_broker(env, root / f"broker-{i}.log"))
            addrs = [b.url.removeprefix("http://") for b in brokers]
            one, every = free_port(), free_port()
            config = HAPROXY.format(
                one=one,
                all=every,
                first=addrs[0],
                servers="\n".join(f"    server b{i} {a}" for i, a in enumerate(addrs)),
            )
            haproxy = run_haproxy(root, "bench", config, f"http://127.0.0.1:{every}/healthz")
            haproxy_pid = haproxy.pid
            for b in brokers:
                warm_up(b.url, cc, tailor)

            def probe() -> dict[str, float]:
                cpu = {f"broker {i}": cpu_seconds(b.proc.pid) for i, b in enumerate(brokers)}
                cpu["server"] = sum(cpu.values())
                cpu["haproxy"] = cpu_seconds(haproxy_pid)
                with psycopg.connect(database_url, autocommit=True) as conn:
                    rows = conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (schema,)
                    ).fetchall()
                for (pid,) in rows:
                    with contextlib.suppress(OSError):
                        cpu[f"pg {pid}"] = cpu_seconds(pid)
                cpu["postgres"] = postgres_cpu()
                cpu["machine"] = machine_busy()
                return cpu

            targets = [
                ("1 direct", brokers[0].url),
                ("1 proxy", f"http://127.0.0.1:{one}"),
                (f"{replicas} proxy", f"http://127.0.0.1:{every}"),
            ]
            print(
                f"store: {database_url.split('@')[-1]}, schema {schema}; {replicas} replicas;"
                f" {seconds:.0f} s per run; {os.cpu_count()} cores shared by the load"
                " generator, HAProxy, PostgreSQL and the brokers"
            )
            columns = ["clients", "target", "req/s", "pairs/s", "p50 mint", "p99 mint"]
            columns += ["p50 redeem", "p99 redeem", "cpu/req"]
            print(" ".join(f"{c:>10}" for c in columns))
            for n, level in enumerate(levels):
                got: dict[str, dict[str, Any]] = {}
                for j, (name, target) in enumerate(targets):
                    m = got[name] = drive("broker", target, level, keys, n * 3 + j, probe)
                    cells = [f"{level}", name, f"{m['requests_s']:.0f}"]
                    cells.append(f"{m['round_trips_s']:.0f}")
                    cells += [f"{m[k]:.1f}ms" for k in ("p50_first", "p99_first")]
                    cells += [f"{m[k]:.1f}ms" for k in ("p50_second", "p99_second")]
                    cells.append(f"{m['cpu_ms']:.2f}ms")
                    print(" ".join(f"{c:>10}" for c in cells))
                    print(f"{'':>21} {cpu_line(m, replicas, seconds)}", flush=True)
                pairs = {name: got[name]["round_trips_s"] for name, _ in targets}
                ratio = pairs[targets[2][0]] / pairs["1 proxy"]
                verdict = "met" if ratio >= 1.5 else "MISSED"
                print(
                    f"{'':>7} {replicas} replicas / 1 replica, both through HAProxy ="
                    f" {ratio:.2f} (target >= 1.5: {verdict}); 1 through HAProxy / 1 direct ="
                    f" {pairs['1 proxy'] / pairs['1 direct']:.2f}"
                )
            print(
                "(ms; pairs/s: mint+redeem round trips a second; cpu/req: all the brokers'"
                " CPU per request; cpu s: CPU seconds over the run, 'machine' is every"
                " process's, 'other' what none of those named used)"
            )
        finally:
            if haproxy is not None:
                stop(haproxy)
            for b in brokers:
                b.stop()


def preload_bench(args: argparse.Namespace, levels: list[int]) -> None:
    """Empty store against preloaded store, same run (see the module's docstring)."""
    from bench.preload import preload
    from broker.settings import Settings

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-broker-")))
        envs: dict[str, dict[str, str]] = {}
        cc, tailor = new_client("cc", "cc"), new_client("tailor", "tailor")
        for name in ("empty", "preloaded"):
            db = f"sqlite:///{root / f'{name}.sqlite'}"
            if args.database_url:
                db = stack.enter_context(fresh_schema(args.database_url))[0]
            envs[name] = env = broker_env(root, db, PUBLIC)
            bench_env(env)
            # The at-start verification of the whole log (and every 10 minutes after) would
            # land in the measurement: it is off on both sides.
            env["BROKER_AUDIT_VERIFY_SECONDS"] = "0"
            provision_clients(env, root, (cc, tailor))  # one keys folder: the second init refuses
        env = envs["preloaded"]
        origin = Settings(public_url=PUBLIC).log_origin()
        took = preload(
            env["BROKER_DATABASE_URL"],
            root / "keys",
            origin,
            events_total=args.preload_events,
            stagings=args.preload_stagings,
        )
        store = env["BROKER_DATABASE_URL"].split("@")[-1].split("?")[0]
        print(
            f"store: {store}; preloaded {args.preload_events} audit events (integrated) and"
            f" {args.preload_stagings} closed stagings in {took:.0f} s; {args.workers}"
            f" worker(s) each; {args.seconds:.0f} s per run, alternating, {args.rounds} rounds"
        )
        brokers = {
            name: stack.enter_context(_running(e, root / f"{name}.log", args.workers))
            for name, e in envs.items()
        }
        keys = (cc.private_pem, tailor.private_pem)
        for b in brokers.values():
            warm_up(b.url, cc, tailor)
        columns = ["clients", "store", "req/s", "rt/s", "p50 mint", "p99 mint"]
        columns += ["p50 redeem", "p99 redeem", "cpu/req"]
        print(" ".join(f"{c:>10}" for c in columns))
        for n, level in enumerate(levels):
            p99s: dict[str, list[float]] = {name: [] for name in brokers}
            for r in range(args.rounds):
                order = list(brokers) if r % 2 == 0 else list(reversed(brokers))
                for j, name in enumerate(order):
                    b = brokers[name]
                    seed = 100 + (n * args.rounds + r) * 2 + j
                    m = drive("broker", b.url, level, keys, seed, tree_cpu(b.proc.pid))
                    p99s[name].append(m["p99_second"])
                    cells = [f"{level}", name, f"{m['requests_s']:.0f}"]
                    cells.append(f"{m['round_trips_s']:.0f}")
                    cells += [f"{m[k]:.1f}ms" for k in ("p50_first", "p99_first")]
                    cells += [f"{m[k]:.1f}ms" for k in ("p50_second", "p99_second")]
                    cells.append(f"{m['cpu_ms']:.2f}ms")
                    print(" ".join(f"{c:>10}" for c in cells), flush=True)
            empty, full = (statistics.median(p99s[k]) for k in ("empty", "preloaded"))
            ratio = full / empty
            verdict = "met" if ratio <= 1.2 else "MISSED"
            print(
                f"{'':>7} median p99 redeem at {level}: preloaded {full:.1f} ms / empty"
                f" {empty:.1f} ms = {ratio:.2f} (target <= 1.2: {verdict})"
            )
        print("(ms; rt/s: mint+redeem round trips a second; cpu/req: the broker's, all workers)")


@contextlib.contextmanager
def _running(env: dict[str, str], log: Path, workers: int) -> Iterator[BrokerProcess]:
    b = start_broker(env, log, workers=workers)
    try:
        yield b
    finally:
        b.stop()


def warm_up(url: str, cc: Client, tailor: Client, pairs: int = 20) -> None:
    """A few mint+redeem pairs, unmeasured: a replica's first requests (caches, its first
    connections) are not counted against whichever target reaches it first."""
    conn = Conn(url)
    for i in range(pairs):
        body = {
            "app_guid": "app",
            "staging_guid": f"warm-{url.rsplit(':', 1)[-1]}-{i}",
            "image": "registry.bench/app:1",
            "username": "u",
            "password": "bench-password",
            "tailor": "tailor",
        }
        status, minted = conn.post("/v1/staging-tokens", body, cc.headers(PUBLIC))
        if status != 201:
            raise SystemExit(f"warm-up mint failed: {status} {minted}")
        status, got = conn.post(
            "/v1/redemptions", {"token": minted["token"]}, tailor.headers(PUBLIC)
        )
        if status != 200:
            raise SystemExit(f"warm-up redeem failed: {status} {got.get('type')}")


def cpu_line(m: dict[str, Any], replicas: int, seconds: float) -> str:
    """Where the CPU went in run ``m``; ``per pair``: the brokers', HAProxy's, this schema's
    backends' and the load generator's CPU per mint+redeem pair, and the most pairs a
    second that cost allows on this machine's cores with nothing else running."""
    cpu = m["cpu"]
    brokers = [cpu[f"broker {i}"] for i in range(replicas)]
    backends = sum(v for k, v in cpu.items() if k.startswith("pg "))
    named = cpu["server"] + cpu["haproxy"] + cpu["postgres"] + cpu["load generator"]
    ours = cpu["server"] + cpu["haproxy"] + backends + cpu["load generator"]
    per_pair = ours / max(1.0, m["round_trips_s"] * seconds)
    cores = os.cpu_count() or 1
    return (
        f"cpu s: brokers {cpu['server']:.2f} ("
        + "+".join(f"{b:.2f}" for b in brokers)
        + f"), haproxy {cpu['haproxy']:.2f}, postgres {cpu['postgres']:.2f} (this schema's"
        f" backends {backends:.2f}), load generator {cpu['load generator']:.2f};"
        f" machine {cpu['machine']:.2f} of {cores * seconds:.1f}, other"
        f" {cpu['machine'] - named:.2f}; per pair {1000 * per_pair:.1f}ms (at most"
        f" {cores / per_pair:.0f} pairs/s on {cores} idle cores)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--compare-http", default="", help="protocols: httptools,serve,h11")
    parser.add_argument("--batches", type=int, default=12, help="with --compare-http")
    parser.add_argument("--batch", type=int, default=1000, help="with --compare-http")
    parser.add_argument("--preload", action="store_true", help="empty against preloaded store")
    parser.add_argument("--preload-events", type=int, default=1_000_000)
    parser.add_argument("--preload-stagings", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="with --preload")
    parser.add_argument(
        "--workers", type=int, default=1, help="the broker under test's worker processes"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="N >= 2: N replicas behind HAProxy (PostgreSQL)"
    )
    args = parser.parse_args()
    BENCH_SECONDS.value = args.seconds
    levels = [int(x) for x in args.levels.split(",")]
    if args.preload:
        preload_bench(args, [8] if args.levels == "1,8,32" else levels)
        return 0
    if args.replicas > 1:
        if not args.database_url.startswith(("postgresql://", "postgres://")):
            parser.error("--replicas needs --database-url postgresql://...")
        replicas_bench(args.database_url, args.replicas, levels, args.seconds)
        return 0

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-broker-")))
        db = f"sqlite:///{root / 'broker.sqlite'}"
        if args.database_url:
            # A schema of the run's own, dropped after: runs never see each other's clients.
            db = stack.enter_context(fresh_schema(args.database_url))[0]
        env = broker_env(root, db, PUBLIC)
        bench_env(env)
        cc, tailor = provision_clients(env, root)
        if args.compare_http:
            names = args.compare_http.split(",")
            compare_http(env, root, names, args.batches, args.batch)
            return 0
        broker = start_broker(env, root / "broker.log", workers=args.workers)
        (root / "bare_app.py").write_text(BARE_APP)
        port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(root),
                "bare_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=dict(os.environ),
        )
        bare_url = f"http://127.0.0.1:{port}"
        try:
            wait_http(bare_url + "/docs", timeout=30, proc=bare)
            keys = (cc.private_pem, tailor.private_pem)
            store = db.split("@")[-1].split("?")[0]
            print(
                f"store: {store}; broker: {args.workers} worker(s), bare: 1;"
                f" {args.seconds:.0f} s per run, alternating"
            )
            columns = [
                "clients",
                "target",
                "req/s",
                "rt/s",
                "p50 mint",
                "p99 mint",
                "p50 redeem",
                "p99 redeem",
                "cpu/req",
            ]
            print(" ".join(f"{c:>10}" for c in columns))
            for n, level in enumerate(levels):
                got: dict[str, dict[str, Any]] = {}
                for kind in ("bare", "broker"):
                    url = bare_url if kind == "bare" else broker.url
                    probe = server_cpu(bare.pid) if kind == "bare" else tree_cpu(broker.proc.pid)
                    got[kind] = drive(kind, url, level, keys, n * 2 + (kind == "broker"), probe)
                    m = got[kind]
                    cells = [
                        f"{level}",
                        kind,
                        f"{m['requests_s']:.0f}",
                        f"{m['round_trips_s']:.0f}",
                    ]
                    cells += [f"{m[k]:.1f}ms" for k in ("p50_first", "p99_first")]
                    cells += [f"{m[k]:.1f}ms" for k in ("p50_second", "p99_second")]
                    cells.append(f"{m['cpu_ms']:.2f}ms")
                    print(" ".join(f"{c:>10}" for c in cells), flush=True)
                ratio = got["broker"]["requests_s"] / got["bare"]["requests_s"]
                print(f"{'':>7} broker/bare throughput = {ratio:.2f}")
            print("(ms; for 'bare' the two columns are two plain JSON POSTs)")
        finally:
            broker.stop()
            bare.terminate()
            bare.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
