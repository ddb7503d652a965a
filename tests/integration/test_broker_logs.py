"""What a live broker writes to stderr: JSON lines only, its libraries' records too."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import psycopg
import pytest

from tests.support.broker_api import STAGING_TOKENS
from tests.support.brokerproc import broker_env, provision, start_broker
from tests.support.clients import Clients

pytestmark = pytest.mark.slow


def test_every_line_a_broker_on_postgresql_writes_is_json(
    tmp_path: Path, clients: Clients, pg_url: str, pg_schema_url: str
) -> None:
    """The broker's PostgreSQL connections are cut behind its pool's back: psycopg_pool
    logs the connections it discards, and those lines are JSON like the broker's own
    (they were Python's plain last-resort text)."""
    name = "stager-logs-" + secrets.token_hex(4)  # this broker's connections, no one else's
    env = broker_env(tmp_path, f"{pg_schema_url}&application_name={name}", "http://unused")
    provision(env, tmp_path, clients.all())
    log = tmp_path / "broker.log"  # stdout and stderr
    broker = start_broker(env, log, self_audience=True)
    lookup = STAGING_TOKENS + "/lookup"
    assert broker.post(lookup, clients.cc.headers(broker.url), {"token": "x"}).status_code == 400
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (name,),
        ).fetchone()
    assert row is not None and row[0] >= 1
    statuses = {
        broker.post(lookup, clients.cc.headers(broker.url), {"token": "x"}).status_code
        for _ in range(4)
    }
    assert 400 in statuses  # the pool recovered
    broker.stop()
    lines = log.read_text().splitlines()
    assert lines
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line[:200]!r}")
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["logger"].startswith("psycopg") for r in records), lines
