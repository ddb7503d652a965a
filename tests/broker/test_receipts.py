"""A staging's receipt: its own events with C2SP tlog-proofs, checked offline by our
verifier and by the Go checksum database's tlog package, revealing no other event."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.checkpoints import LogIdentity
from broker.audit.merkle import leaf_hash
from broker.audit.note import Signer, parse_tlog_proof
from broker.audit.receipts import Receipt, receipt, verify_receipt, write_receipt
from broker.settings import Settings
from tests.support.brokerapp import AUD, Api
from tests.support.brokerproc import broker_cli
from tests.support.gotlog import GoTlog


def _stage(api: Api, guid: str, *, complete: bool = True) -> None:
    token = api.mint(guid).json()["token"]
    assert api.redeem(token).status_code == 200
    if complete:
        assert api.complete(guid, "succeeded").status_code == 200


@pytest.fixture
def staged(api: Api) -> Api:
    for guid in ("stg-a", "stg-b", "stg-c"):
        _stage(api, guid)
    api.service.audit.integrate()
    return api


def test_a_receipt_proves_each_event_and_go_agrees(
    staged: Api, tmp_path: Path, go_tlog: GoTlog
) -> None:
    done = receipt(staged.service.audit, staged.service.cosignatures, "stg-b")
    written = write_receipt(done, tmp_path / "r")
    assert len(written) == 8  # issued, redeemed, completed, purged: an entry and a proof each
    identity = staged.service.audit.identity
    assert identity is not None
    assert verify_receipt(tmp_path / "r", identity) == (4, [])
    vkey = identity.vkeys()[0]
    for entry in sorted((tmp_path / "r").glob("*.entry")):
        data = entry.read_bytes()
        assert b"stg-b" in data and b"stg-a" not in data and b"stg-c" not in data
        proof = parse_tlog_proof(entry.with_suffix(".tlog-proof").read_bytes())
        text = go_tlog.open_note(vkey, proof.checkpoint)  # Go's note.Open
        size, root = int(text.split("\n")[1]), base64.b64decode(text.split("\n")[2])
        assert go_tlog.record_hash(data) == leaf_hash(data)  # tlog.RecordHash
        assert (
            go_tlog.inclusion_error(proof.index, size, root, leaf_hash(data), proof.proof) is None
        )


def test_a_changed_or_moved_entry_is_refused(staged: Api, tmp_path: Path) -> None:
    identity = staged.service.audit.identity
    assert identity is not None
    folder = tmp_path / "r"
    write_receipt(receipt(staged.service.audit, staged.service.cosignatures, "stg-a"), folder)
    first = sorted(folder.glob("*.entry"), key=lambda p: int(p.stem))[0]
    first.write_bytes(first.read_bytes().replace(b"stg-a", b"stg-z"))
    checked, problems = verify_receipt(folder, identity)
    assert checked == 4 and len(problems) == 1, problems
    assert problems[0].startswith(f"{first.name}: not in the signed log")
    # Another log's key opens none of it.
    stranger = Signer("broker.test/audit", ed25519.Ed25519PrivateKey.generate())
    _, foreign = verify_receipt(folder, LogIdentity.from_vkeys([stranger.vkey()]))
    assert len(foreign) == 4 and all("checkpoint does not verify" in p for p in foreign)
    # An entry under another index than its proof's.
    second = sorted(folder.glob("*.entry"), key=lambda p: int(p.stem))[1]
    second.rename(folder / "999.entry")
    _, moved = verify_receipt(folder, identity)
    assert any(p.startswith("999.entry: cannot read it or its proof") for p in moved), moved


def test_the_api_gives_cc_and_auditors_a_receipt(staged: Api) -> None:
    c = staged.clients
    for who in (c.cc, c.auditor):
        r = staged.call("GET", "/v1/stagings/stg-c/receipt", who)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["staging_guid"] == "stg-c" and len(body["entries"]) == 4
        assert all(
            e["tlog_proof"].startswith("c2sp.org/tlog-proof@v1\nindex ") for e in body["entries"]
        )
    assert staged.call("GET", "/v1/stagings/stg-c/receipt", c.tailor).status_code == 403
    assert staged.http.get("/v1/stagings/stg-c/receipt").status_code == 401
    missing = staged.call("GET", "/v1/stagings/nope/receipt", c.cc)
    assert (
        missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    )


@pytest.mark.slow
def test_the_cli_writes_and_checks_a_receipt_offline(
    staged: Api, settings: Settings, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(BROKER_DATABASE_URL=settings.database_url, BROKER_KEYS_DIR=str(settings.keys_dir),
               BROKER_PUBLIC_URL=AUD)  # fmt: skip
    out = broker_cli(env, "audit", "receipt", "stg-a", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("4 events of staging stg-a, proven in the log of 12 events")
    vkey = broker_cli(env, "audit", "log-key").stdout.split()[0]
    offline = {k: v for k, v in env.items() if k != "BROKER_DATABASE_URL"}
    offline.update(
        BROKER_DATABASE_URL="sqlite:////nonexistent/x.db", BROKER_KEYS_DIR="/nonexistent"
    )
    ok = broker_cli(offline, "audit", "verify", "--receipt", str(tmp_path / "r"), "--log-key", vkey)
    assert ok.returncode == 0 and ok.stdout.startswith("4/4 entries proven"), ok.stdout + ok.stderr
    victim = next((tmp_path / "r").glob("*.entry"))
    victim.write_bytes(victim.read_bytes().replace(b"stg-a", b"stg-z"))
    bad = broker_cli(
        offline, "audit", "verify", "--receipt", str(tmp_path / "r"), "--log-key", vkey
    )
    assert bad.returncode == 1 and bad.stdout.startswith("3/4 entries proven"), bad.stdout
    again = broker_cli(env, "audit", "receipt", "stg-a", "--out", str(tmp_path / "r"))
    assert again.returncode != 0 and "Traceback" not in again.stderr  # files are never replaced
    nobody = broker_cli(env, "audit", "receipt", "nope", "--out", str(tmp_path / "n"))
    assert nobody.returncode != 0 and "no audit events for staging nope" in nobody.stderr


def test_a_receipt_carries_the_witnesses_cosignatures(staged: Api, tmp_path: Path) -> None:
    """The checkpoint in each tlog-proof is the note as served: cosignatures included, so
    an app team can require witnesses too."""
    import time

    from broker.audit.note import Cosigner, cosign, new_key, parse_note
    from broker.audit.witnesses import WitnessPolicy

    witness = Cosigner("witness.receipts.example", new_key())
    staged.service.witnesses.add(witness.vkey())
    text = parse_note(staged.http.get("/v1/audit/checkpoint").content)[0]
    posted = staged.http.post(
        "/v1/audit/cosignatures",
        content=(text + "\n" + cosign(text, witness, int(time.time()) - 10)).encode(),
        headers={"content-type": "text/plain"},
    )
    assert posted.status_code == 200, posted.text
    _stage(staged, "stg-d")  # the log grows past the cosigned checkpoint
    staged.service.audit.integrate()
    done = receipt(staged.service.audit, staged.service.cosignatures, "stg-c")
    identity = staged.service.audit.identity
    assert identity is not None
    policy = WitnessPolicy.of([witness.vkey()], 1)
    cosigned_size = int(text.split("\n")[1])
    assert done.checkpoint.size == cosigned_size < staged.service.audit.size()
    assert all(policy.count(e.proof.checkpoint, identity.verifiers) == 1 for e in done.entries)
    assert verify_receipt(_written(done, tmp_path), identity) == (4, [])
    # A staging newer than every cosigned checkpoint gets the newest one, uncosigned.
    newer = receipt(staged.service.audit, staged.service.cosignatures, "stg-d")
    assert newer.checkpoint.size == staged.service.audit.size()


def _written(done: Receipt, tmp_path: Path) -> Path:
    write_receipt(done, tmp_path / "cosigned")
    return tmp_path / "cosigned"
