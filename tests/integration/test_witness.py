"""A witness (`broker audit witness`, its own process, as someone other than the operator
runs it) against a live `broker serve`: it cosigns, the broker serves the cosignature,
Go's note package still opens the cosigned checkpoint, an auditor requires it; then the
operator rewrites history and re-signs it with the log's own key, restarts the broker,
and the witness refuses, loudly, and posts nothing."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from broker.audit.checkpoints import LogIdentity
from broker.audit.events import Record
from broker.audit.leaves import leaf_data
from broker.audit.merkle import Appender, leaf_hash
from broker.audit.note import (
    cosignatures,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_verifier_key,
    read_cosigner,
)
from broker.keys import load_keys
from broker.store import open_store
from tests.support.broker_api import minted_token
from tests.support.brokerproc import (
    BrokerProcess,
    broker_cli,
    broker_env,
    provision,
    start_broker,
)
from tests.support.clients import Clients
from tests.support.gotlog import GoTlog

pytestmark = pytest.mark.slow  # `broker serve`, and the witness and broker commands

ORIGIN = "stager.test/audit"


@dataclass
class Live:
    env: dict[str, str]
    broker: BrokerProcess
    tmp: Path
    port: int
    outputs: list[str]
    """Everything every command printed, and the argv of each (scanned for the key)."""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = broker_cli(self.env, *args)
        self.outputs += [" ".join(args), done.stdout, done.stderr]
        return done

    def witness(self, *args: str, key: str = "witness.key") -> subprocess.CompletedProcess[str]:
        """`broker audit witness` with no BROKER_* setting at all: the witness's own machine."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        argv = ["audit", "witness", "--broker", self.broker.url, "--key", str(self.tmp / key)]
        argv += ["--state", str(self.tmp / "witness-state.json"), *args]
        done = broker_cli(env, *argv)
        self.outputs += [" ".join(argv), done.stdout, done.stderr]
        return done

    def checkpoint(self) -> bytes:
        r = requests.get(f"{self.broker.url}/v1/audit/checkpoint", timeout=10)
        assert r.status_code == 200, r.text
        return r.content

    def settled(self) -> int:
        """Wait until the broker has integrated and signed everything: the size."""
        last, deadline = -1, time.monotonic() + 15
        while time.monotonic() < deadline:
            size = parse_checkpoint(parse_note(self.checkpoint())[0]).size
            if size == last:
                return size
            last = size
            time.sleep(1.3)  # BROKER_AUDIT_CHECKPOINT_SECONDS is 1
        raise AssertionError("the log did not settle")

    def restart(self) -> None:
        self.broker.stop()
        self.broker = start_broker(self.env, self.tmp / "broker.log", port=self.port)


@pytest.fixture
def live(tmp_path: Path, clients: Clients) -> Iterator[Live]:
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    env["BROKER_AUDIT_ORIGIN"] = ORIGIN
    env["BROKER_UPSTREAM_EXCHANGE"] = "false"  # the images name hosts no test may look up
    provision(env, tmp_path, clients.all())
    broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
    env["BROKER_PUBLIC_URL"] = broker.url
    port = int(broker.url.rsplit(":", 1)[1])
    live = Live(env, broker, tmp_path, port, [])
    yield live
    live.broker.stop()


def _mint(live: Live, clients: Clients, *guids: str) -> None:
    for guid in guids:
        minted_token(live.broker.url, clients.cc, staging_guid=guid)


def _rewrite_history(env: dict[str, str]) -> int:
    """What an operator holding the database and the audit key can do, the broker
    stopped: change an event, recompute every leaf, the stored tree and a checkpoint of the
    same size, signed with the log's own key (and drop the old checkpoints and their
    cosignatures). The size."""
    keys = load_keys(Path(env["BROKER_KEYS_DIR"]))
    identity = LogIdentity(ORIGIN, keys.audit_public, keys.audit_key)
    store = open_store(env["BROKER_DATABASE_URL"])
    try:
        with store.transaction() as tx:
            tx._exec("UPDATE audit_events SET client = ? WHERE seq = 2", ("someone-else",))
            records = [Record.from_row(r) for r in tx.audit_rows(limit=100_000)]
            for table in ("audit_tree", "audit_notes", "audit_cosignatures"):
                tx._exec(f"DELETE FROM {table}")  # noqa: S608 - names from this test
            appender, hashes = Appender(), []
            for record in records:
                leaf = leaf_hash(leaf_data(record.body()))
                hashes += appender.append(leaf)
                tx._exec("UPDATE audit_events SET hash = ? WHERE seq = ?", (leaf.hex(), record.seq))
            tx.insert_tree_hashes(0, hashes)
            signed = identity.sign(appender.size, appender.root())
            tx.insert_note(signed.size, signed.root, signed.note.decode(), int(time.time()))
            return signed.size
    finally:
        store.close()


def _secrets(path: Path) -> list[str]:
    """The witness key file's secret, in every form it could leak in."""
    key = read_cosigner(path).key
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = path.read_text().split("-----BEGIN PRIVATE KEY-----")[1].split("-----END")[0]
    return [line for line in pem.split() if line] + [
        base64.b64encode(raw).decode(),
        raw.hex(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


def test_a_witness_cosigns_and_refuses_a_rewritten_history(
    live: Live, clients: Clients, go_tlog: GoTlog
) -> None:
    started = time.monotonic()
    # The witness makes its key, and hands its verifier key to the operator.
    made = live.cli("audit", "witness", "--init", str(live.tmp / "witness.key"), "--name",
                    "witness.audit-team.test")  # fmt: skip
    assert made.returncode == 0, made.stderr
    vkey = made.stdout.strip()
    assert vkey.startswith("witness.audit-team.test+") and "\n" not in vkey
    witness_key = parse_verifier_key(vkey)
    assert witness_key.alg == 0x04
    assert oct((live.tmp / "witness.key").stat().st_mode & 0o777) == "0o600"
    again = live.cli("audit", "witness", "--init", str(live.tmp / "witness.key"))
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    shown = live.cli("audit", "witness", "--key", str(live.tmp / "witness.key"))
    assert shown.stdout.strip() == vkey
    # A second witness, not registered (an auditor may name it all the same).
    other = live.cli("audit", "witness", "--init", str(live.tmp / "other.key"))
    assert other.returncode == 0 and other.stdout.startswith("witness.")
    other_vkey = other.stdout.strip()

    added = live.cli("audit", "witnesses", "add", vkey)
    assert added.returncode == 0 and "added witness witness.audit-team.test+" in added.stdout
    listed = live.cli("audit", "witnesses", "list")
    assert listed.stdout.strip() == f"{vkey}  never cosigned"
    log_vkey = live.cli("audit", "log-key").stdout.split()[0]
    assert log_vkey.startswith(ORIGIN + "+")
    _mint(live, clients, "stg-1", "stg-2")

    # One round: it cosigns; the checkpoint is served with the cosignature.
    size = live.settled()
    first = live.witness("--log-key", log_vkey, "--once")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith(f"cosigned checkpoint {size} of {ORIGIN} (root ")
    assert "the first this witness cosigned" in first.stdout and first.stderr == ""
    note = live.checkpoint()
    _, signatures = parse_note(note)
    assert [s.name for s in signatures] == [ORIGIN, "witness.audit-team.test"]
    identity = LogIdentity.from_vkeys([log_vkey])
    found = cosignatures(open_note(note, identity.verifiers), [witness_key])
    assert list(found) == [vkey] and abs(found[vkey] - time.time()) < 60
    # The Go checksum database's note package opens the cosigned note with the LOG's key.
    assert parse_checkpoint(go_tlog.open_note(log_vkey, note)).size == size

    # The log grows; the next round checks a consistency proof first.
    _mint(live, clients, "stg-3")
    grown = live.settled()
    second = live.witness("--log-key", log_vkey, "--once")
    assert second.returncode == 0, second.stderr
    assert f"cosigned checkpoint {grown} " in second.stdout
    assert f"consistent with checkpoint {size} cosigned before" in second.stdout
    listed = live.cli("audit", "witnesses", "list")
    assert listed.stdout.startswith(f"{vkey}  cosigned up to checkpoint {grown}, last at ")

    # An auditor requires the witness: offline, on an export, and on the stored log.
    export = live.cli("audit", "export")
    assert export.returncode == 0, export.stderr
    (live.tmp / "audit.jsonl").write_text(export.stdout)
    verify = ["audit", "verify", "--file", str(live.tmp / "audit.jsonl"), "--log-key", log_vkey]
    one = live.cli(*verify, "--witness", vkey, "--min-witnesses", "1")
    assert one.returncode == 0, one.stdout
    assert f"witnessed: checkpoint {grown} cosigned by 1 of the given witnesses" in one.stdout
    two = live.cli(*verify, "--witness", vkey, "--witness", other_vkey, "--min-witnesses", "2")
    assert two.returncode == 1
    assert (
        "witnesses: no checkpoint is cosigned by 2 of the 2 given witnesses"
        f" (at most 1, on checkpoint {grown})"
    ) in two.stdout
    stored = live.cli("audit", "verify", "--log-key", log_vkey, "--witness", vkey)
    assert stored.returncode == 0 and "witnessed: checkpoint" in stored.stdout, stored.stdout

    # The operator rewrites an event, recomputes the tree, re-signs a checkpoint of the
    # size the witness cosigned with the log's own key, and restarts the broker.
    state = (live.tmp / "witness-state.json").read_bytes()
    live.broker.stop()
    assert _rewrite_history(live.env) == grown
    live.restart()
    forged = live.checkpoint()
    assert parse_checkpoint(go_tlog.open_note(log_vkey, forged)).size == grown  # valid, alone
    refused = live.witness("--log-key", log_vkey, "--once")
    assert refused.returncode == 3, (refused.stdout, refused.stderr)
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith(
        f"broker audit witness: REFUSED to cosign: fork: the log's checkpoint {grown} has root"
    ), line
    assert line.endswith(f"but this witness cosigned root {_root_of(state)} at that size")
    assert (live.tmp / "witness-state.json").read_bytes() == state
    assert parse_note(live.checkpoint())[1][1:] == []  # nothing posted

    # The rewritten log grows on: the consistency proof from what the witness cosigned fails.
    _mint(live, clients, "stg-4")
    live.settled()
    refused = live.witness("--log-key", log_vkey, "--once")
    assert refused.returncode == 3
    assert "REFUSED to cosign: fork: " in refused.stderr and "consistency proof fails" in (
        refused.stderr
    )
    assert (live.tmp / "witness-state.json").read_bytes() == state
    assert parse_note(live.checkpoint())[1][1:] == []

    # The operator may unregister it (audited).
    removed = live.cli("audit", "witnesses", "remove", vkey)
    assert removed.returncode == 0 and "removed witness witness.audit-team.test+" in removed.stdout
    assert live.cli("audit", "witnesses", "list").stdout == ""
    audited = live.cli("audit", "list", "--event", "witness.removed", "--format", "json")
    assert '"witness.removed"' in audited.stdout and vkey in audited.stdout

    # The witness key was never in an argument, an output or the broker's log.
    secrets = _secrets(live.tmp / "witness.key")
    seen = [*live.outputs, live.broker.log.read_text(), state.decode()]
    for secret in secrets:
        assert all(secret not in text for text in seen)
    assert time.monotonic() - started < 120


def _root_of(state: bytes) -> str:
    import json

    return str(json.loads(state)["root"])
