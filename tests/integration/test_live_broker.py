"""Against live ``broker serve`` processes: restarts, replicas on PostgreSQL, secret scans."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from broker.audit import AuditEvent, AuditLog
from broker.keys import load_keys
from broker.store import open_store
from tests.support.broker_api import STAGING_TOKENS, minted_token
from tests.support.brokerproc import BrokerProcess, broker_cli, broker_env, provision, start_broker
from tests.support.clients import Clients
from tests.support.concurrency import together
from tests.support.credentials import PASSWORD
from tests.support.processes import free_port, spawn
from tests.support.tls import loopback_certificate

pytestmark = pytest.mark.slow

PUBLIC = "https://broker.platform.internal"


def setup_broker(tmp_path: Path, database_url: str, clients: Clients) -> dict[str, str]:
    env = broker_env(tmp_path, database_url, PUBLIC)
    provision(env, tmp_path, clients.all())
    return env


def mint(b: BrokerProcess, clients: Clients, guid: str) -> str:
    return minted_token(b.url, clients.cc, audience=PUBLIC, staging_guid=guid)


def redeem(b: BrokerProcess, clients: Clients, token: str) -> int:
    r = b.post("/v1/redemptions", clients.tailor.headers(PUBLIC), {"token": token})
    if r.status_code == 200:
        assert r.json()["password"] == PASSWORD
    return r.status_code


def test_restart_between_mint_and_redeem_and_no_secret_at_rest(
    tmp_path: Path, clients: Clients
) -> None:
    db = tmp_path / "state" / "broker.sqlite"
    env = setup_broker(tmp_path, f"sqlite:///{db}", clients)
    log = tmp_path / "broker.log"
    first = start_broker(env, log)
    try:
        token = mint(first, clients, "stg-restart")
        other = mint(first, clients, "stg-other")
    finally:
        first.stop()
    second = start_broker(env, log)
    try:
        assert redeem(second, clients, token) == 200
        assert redeem(second, clients, token) == 400
        status = {"status": "succeeded"}
        headers = clients.tailor.headers(PUBLIC)
        done = second.post("/v1/stagings/stg-restart/complete", headers, status)
        assert done.status_code == 200
    finally:
        second.stop()
    text = log.read_text()
    assert '"msg": "broker started"' in text  # the logs are JSON lines
    for secret in (PASSWORD, token, other):
        assert secret not in text
        for path in db.parent.iterdir():
            assert secret.encode() not in path.read_bytes(), path


def test_replicas_on_postgresql_redeem_once(
    tmp_path: Path, clients: Clients, pg_schema_url: str
) -> None:
    env = setup_broker(tmp_path, pg_schema_url, clients)
    a = start_broker(env, tmp_path / "a.log")
    b = start_broker(env, tmp_path / "b.log")
    try:
        for n in range(5):
            token = mint(a if n % 2 else b, clients, f"stg-{n}")
            replicas = (a, b) * 3
            results = together([functools.partial(redeem, r, clients, token) for r in replicas])
            assert sorted(results) == [200] + [400] * 5, results
        # One assertion, two replicas: the second sees a replay.
        once = clients.cc.headers(PUBLIC)
        body = {"token": "st1.x.y"}
        assert a.post(STAGING_TOKENS + "/lookup", once, body).status_code == 400
        assert b.post(STAGING_TOKENS + "/lookup", once, body).status_code == 401
    finally:
        a.stop()
        b.stop()
    # Two replicas, one log: each integrated while it held the integrator's lock, and the
    # tree verifies against every checkpoint either signed (the last at shutdown).
    verified = broker_cli(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    counts = re.fullmatch(
        r"46/46 events valid, (\d+)/(\d+) checkpoints valid, 0 events unsigned",
        verified.stdout.splitlines()[0],
    )
    assert counts and counts[1] == counts[2] and int(counts[1]) >= 1, verified.stdout
    with psycopg.connect(pg_schema_url) as conn:
        rows = conn.execute("SELECT event, count(*) FROM audit_events GROUP BY event").fetchall()
        events: dict[str, int] = dict(rows)
        assert events["token.redeemed"] == 5 and events["token.refused"] == 26
        seqs = [r[0] for r in conn.execute("SELECT seq FROM audit_events ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1))  # one gap-free sequence for both replicas
        dump = str(conn.execute("SELECT * FROM stagings").fetchall())
        dump += str(conn.execute("SELECT * FROM audit_events").fetchall())
        assert PASSWORD not in dump


def test_cli_keys_and_clients(tmp_path: Path, clients: Clients) -> None:
    env = setup_broker(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", clients)
    again = broker_cli(env, "keys", "init")
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    rotated = broker_cli(env, "keys", "rotate")
    new_kid = re.search(r"tk-[0-9a-f]+", rotated.stdout).group(0)  # type: ignore[union-attr]
    listed = broker_cli(env, "keys", "list").stdout.splitlines()
    assert len(listed) == 3 and listed[2].startswith(new_kid) and listed[2].endswith("yes")
    old_kid = listed[1].split()[0]
    assert broker_cli(env, "keys", "retire", new_kid).returncode == 1
    assert broker_cli(env, "keys", "retire", old_kid).returncode == 0
    names = broker_cli(env, "clients", "list").stdout
    # Reading needs the database only: no key material, no schema change.
    keyless = {**env, "BROKER_KEYS_DIR": str(tmp_path / "no-keys")}
    listed_keyless = broker_cli(keyless, "clients", "list")
    assert listed_keyless.returncode == 0 and listed_keyless.stdout == names
    assert broker_cli(keyless, "audit", "list").returncode == 0
    login = broker_cli(env, "audit", "login", "--client", clients.cc.name)
    assert login.returncode == 1 and "not a registered auditor" in login.stderr
    assert all(c.name in names for c in clients.all())
    cc_public = str(tmp_path / f"{clients.cc.name}.pub.pem")
    dup = broker_cli(
        env, "clients", "add", clients.cc.name, "--role", "cc", "--public-key", cc_public
    )
    assert dup.returncode == 1 and "exists" in dup.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    r = broker_cli(env, "clients", "add", "x", "--role", "cc", "--public-key", str(bad))
    assert (
        r.returncode == 1 and r.stderr.startswith("broker: error:") and "Traceback" not in r.stderr
    )
    weak = tmp_path / "weak.pem"  # an Ed25519 key that is a small-order point
    weak.write_text(
        "-----BEGIN PUBLIC KEY-----\n"
        "MCowBQYDK2VwAyEAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        "-----END PUBLIC KEY-----\n"
    )
    r = broker_cli(env, "clients", "add", "x", "--role", "cc", "--public-key", str(weak))
    assert r.returncode == 1 and r.stderr.strip().endswith("weak (small-order) point"), r.stderr
    assert broker_cli(env, "clients", "remove", "x").returncode == 1
    assert broker_cli(env, "clients", "remove", clients.puller.name).returncode == 0
    king = broker_cli(env, "clients", "add", "y", "--role", "king", "--public-key", str(bad))
    assert king.returncode == 2


@pytest.mark.parametrize(
    ("env_over", "message"),
    [
        ({"BROKER_KEYS_DIR": "/nonexistent/keys"}, "broker keys init"),
        ({"BROKER_DATABASE_URL": "mysql://x"}, "must start with"),
        ({"BROKER_TOKEN_TTL_SECONDS": "abc"}, "BROKER_TOKEN_TTL_SECONDS"),
    ],
)
def test_serve_misconfiguration_is_one_line(
    tmp_path: Path, clients: Clients, env_over: dict[str, str], message: str
) -> None:
    env = setup_broker(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", clients)
    env.update(env_over)
    r = broker_cli(env, "serve", "--port", "1")
    assert r.returncode == 1
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_serve_over_tls(tmp_path: Path, clients: Clients) -> None:
    loopback_certificate(tmp_path)
    env = setup_broker(tmp_path, f"sqlite:///{tmp_path / 'b.sqlite'}", clients)
    port = free_port()
    log = (tmp_path / "tls.log").open("wb")
    argv = [sys.executable, "-m", "broker.cli", "serve", "--port", str(port)]
    argv += ["--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")]
    proc = spawn(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{url}/healthz", verify=str(tmp_path / "tls.crt"), timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.1)
        assert r.json() == {"status": "ok"}
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/healthz", timeout=2)  # not trusted by default: real TLS
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("broker serve did not stop within 15 s of SIGTERM") from None


def test_verifying_a_long_audit_log_does_not_hold_other_requests(
    tmp_path: Path, clients: Clients
) -> None:
    db = tmp_path / "broker.sqlite"
    env = setup_broker(tmp_path, f"sqlite:///{db}", clients)
    store = open_store(f"sqlite:///{db}")
    audit = AuditLog(
        store, load_keys(tmp_path / "keys"), origin="unused"
    )  # pending: the broker places them
    for batch in range(100):  # 100,000 events: seconds of hashing to verify
        with store.transaction() as tx:
            writer = audit.writer(tx)
            for n in range(1000):
                detail = {"n": batch * 1000 + n}
                writer.append(AuditEvent("registry.token", client="cell-1", detail=detail))
    store.close()
    env["BROKER_AUDIT_VERIFY_SECONDS"] = "0"  # no background verification: only the request's
    b = start_broker(env, tmp_path / "broker.log")
    try:
        started, done = threading.Event(), threading.Event()
        answer: list[requests.Response] = []

        def verify() -> None:
            headers = clients.auditor.headers(PUBLIC)
            started.set()
            answer.append(requests.get(f"{b.url}/v1/audit/verify", headers=headers, timeout=120))
            done.set()

        worker = threading.Thread(target=verify)
        worker.start()
        started.wait(10)
        time.sleep(0.1)
        served_meanwhile = 0
        while not done.is_set():
            if requests.get(f"{b.url}/healthz", timeout=120).status_code == 200:
                served_meanwhile += int(not done.is_set())
        worker.join(120)
        assert answer and answer[0].status_code == 200, answer
        assert answer[0].json()["events_total"] > 100_000 and answer[0].json()["intact"]
        # Inline on the event loop, the verification would hold every request until it
        # ended: one health check (the one waiting) could complete "meanwhile", maybe two
        # by a race at the end. Off the loop they go on being served (about 450 here).
        assert served_meanwhile >= 10, served_meanwhile
    finally:
        b.stop()
