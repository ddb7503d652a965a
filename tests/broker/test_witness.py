"""Witnesses (c2sp.org/tlog-cosignature): the operator registers them, they post
cosignatures of the log's checkpoints, the broker keeps the valid ones (and the
checkpoints they cosign) and serves them, and an auditor can require K of them. The
witness's own side (broker/audit/witness.py) refuses a fork, a rollback and a bad proof.

The live witness command against a live `broker serve`: tests/integration/test_witness.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit import AuditFilter, events, make_filter
from broker.audit.checkpoints import LogIdentity
from broker.audit.export import verify_export
from broker.audit.note import (
    Cosigner,
    NoteError,
    Signature,
    Signer,
    add_signatures,
    cosign,
    cosignatures,
    new_key,
    open_note,
    parse_checkpoint,
    parse_note,
    read_cosigner,
    read_private_key,
    write_cosigner,
    write_private_key,
)
from broker.audit.witness import Misbehaved, RoundFailed, StateFile, Witness
from broker.audit.witnesses import MAX_COSIGNED_BYTES, WitnessPolicy
from broker.errors import Conflict, Invalid, NotFound, SetupError
from broker.settings import Settings
from tests.support.brokerapp import Api, serve
from tests.support.clients import Clients
from tests.support.gotlog import GoTlog

W1, W2, W3 = (Cosigner(f"witness.w{n}.example", new_key()) for n in (1, 2, 3))
COSIGNATURES = "/v1/audit/cosignatures"
T = int(time.time()) - 1000  # a cosignature's time (never ahead of the broker's clock)


def _stage(api: Api, n: int) -> None:
    token = api.mint(f"stg-{n}").json()["token"]
    assert api.redeem(token).status_code == 200


def _grow(api: Api, n: int) -> int:
    """Stage ``n`` and integrate: a new checkpoint; its size."""
    _stage(api, n)
    done = api.service.audit.integrate()
    assert done is not None and done.signed is not None
    return done.size


def _identity(api: Api) -> LogIdentity:
    identity = api.service.audit.identity
    assert identity is not None
    return identity


def _body(text: str) -> str:
    return parse_note(text.encode())[0]


def _cosigned(api: Api, witness: Cosigner, at: int = T, note: str | None = None) -> str:
    """The newest checkpoint's text, a blank line and ``witness``'s cosignature."""
    text = _body(note or api.http.get("/v1/audit/checkpoint").text)
    return text + "\n" + cosign(text, witness, at)


def _post(api: Api, body: str | bytes) -> Any:
    content = body.encode() if isinstance(body, str) else body
    return api.http.post(COSIGNATURES, content=content, headers={"content-type": "text/plain"})


def _stored(api: Api) -> list[dict[str, Any]]:
    with api.store.transaction(write=False) as tx:
        return tx._dicts("SELECT * FROM audit_cosignatures ORDER BY size, witness", ())


def _events(api: Api, kind: str) -> list[Any]:
    return [r for r in api.service.audit.page(0, 1000) if r.event == kind]


@pytest.fixture
def keep_all(settings: Settings, clients: Clients) -> Iterator[Api]:
    with serve(settings.model_copy(update={"audit_checkpoint_keep_seconds": 0}), clients,
               sweep=False) as api:  # fmt: skip
        yield api


# -- registration ----------------------------------------------------------------------


def test_witnesses_are_registered_and_removed_with_audit_events(api: Api) -> None:
    witnesses = api.service.witnesses
    assert witnesses.add(W1.vkey()).vkey() == W1.vkey()
    witnesses.add(" " + W2.vkey() + "\n")
    with pytest.raises(Conflict, match="registered already"):
        witnesses.add(W1.vkey())
    identity = _identity(api)
    with pytest.raises(Invalid, match="not a witness key: its signature type is 0x01"):
        witnesses.add(identity.vkeys()[0])  # the log's own key is no witness
    for junk in ["", "nonsense", W1.vkey()[:-4] + "AAA="]:
        with pytest.raises(Invalid, match="not a witness's verifier key"):
            witnesses.add(junk)
    assert [w.vkey for w in api.service.cosignatures.witnesses()] == [W1.vkey(), W2.vkey()]
    witnesses.remove(W2.vkey())
    with pytest.raises(NotFound):
        witnesses.remove(W2.vkey())
    assert [w.name for w in api.service.cosignatures.witnesses()] == [W1.name]
    added = _events(api, events.WITNESS_ADDED.name)
    removed = _events(api, events.WITNESS_REMOVED.name)
    assert [e.detail for e in added] == [{"vkey": W1.vkey()}, {"vkey": W2.vkey()}]
    assert [e.detail for e in removed] == [{"vkey": W2.vkey()}]
    assert api.service.audit.verify().intact


# -- cosignatures posted, kept and served ----------------------------------------------


def test_a_valid_cosignature_is_kept_and_served(api: Api, go_tlog: GoTlog) -> None:
    size = _grow(api, 0)
    api.service.witnesses.add(W1.vkey())
    api.service.witnesses.add(W2.vkey())
    _grow(api, 1)  # the registrations are events: a newer checkpoint
    size = api.service.audit.size()
    r = _post(api, _cosigned(api, W1, T))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "size": size,
        "cosignatures": [{"witness": W1.vkey(), "timestamp": T, "kept": True}],
    }
    served = api.http.get("/v1/audit/checkpoint")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
    text, signatures = parse_note(served.content)
    assert [s.name for s in signatures] == ["broker.test/audit", W1.name]  # the log's first
    identity = _identity(api)
    opened = open_note(served.content, identity.verifiers)
    assert cosignatures(opened, [W1.verifier(), W2.verifier()]) == {W1.vkey(): T}
    # Go's note package still opens it with the log's key (the cosignature is a line by
    # a key it does not know).
    assert go_tlog.open_note(identity.vkeys()[0], served.text) == text
    assert api.http.get(f"/v1/audit/checkpoints/{size}").content == served.content

    # The whole note as served, with a second witness's line added: the log's and W1's
    # lines are checked and skipped or kept again; W2's is new.
    both = add_signatures(served.content, [cosign(text, W2, T + 5)])
    r = _post(api, both)
    assert r.status_code == 200, r.text
    assert [(c["witness"], c["kept"]) for c in r.json()["cosignatures"]] == [
        (W1.vkey(), False),  # the same one again
        (W2.vkey(), True),
    ]
    # One cosignature per witness per checkpoint: an older one does not replace it, a
    # newer one does.
    assert _post(api, _cosigned(api, W1, T - 1000)).json()["cosignatures"][0]["kept"] is False
    assert _post(api, _cosigned(api, W1, T + 100)).json()["cosignatures"][0]["kept"] is True
    opened = open_note(api.http.get("/v1/audit/checkpoint").content, identity.verifiers)
    assert cosignatures(opened, [W1.verifier(), W2.verifier()]) == {
        W1.vkey(): T + 100,
        W2.vkey(): T + 5,
    }
    assert [(r["size"], r["witness"]) for r in _stored(api)] == [
        (size, v) for v in sorted([W1.vkey(), W2.vkey()])
    ]
    # A removed witness's cosignatures are no longer served (they stay stored).
    api.service.witnesses.remove(W2.vkey())
    _, signatures = parse_note(api.http.get(f"/v1/audit/checkpoints/{size}").content)
    assert [s.name for s in signatures] == ["broker.test/audit", W1.name]
    assert len(_stored(api)) == 2
    assert api.http.get("/v1/audit/checkpoints/999").status_code == 404


def _tampered(api: Api) -> str:
    body = _cosigned(api, W1)
    text, [sig] = parse_note(body.encode())
    raw = bytearray(sig.raw)
    raw[-1] ^= 1
    return text + "\n" + Signature(sig.name, sig.key_id, bytes(raw)).line()


def _never_signed(api: Api) -> str:
    """A valid cosignature by W1 of a checkpoint of the log's size and origin, but another
    root (what a witness fed a fork would post)."""
    cp = parse_checkpoint(_body(api.http.get("/v1/audit/checkpoint").text))
    forged = type(cp)(cp.origin, cp.size, bytes(32)).body()
    return forged + "\n" + cosign(forged, W1, T)


def _other_log(api: Api) -> str:
    cp = parse_checkpoint(_body(api.http.get("/v1/audit/checkpoint").text))
    other = type(cp)("elsewhere.example/audit", cp.size, cp.root).body()
    return other + "\n" + cosign(other, W1, T)


def _no_such_size(api: Api) -> str:
    cp = parse_checkpoint(_body(api.http.get("/v1/audit/checkpoint").text))
    other = type(cp)(cp.origin, cp.size + 100, cp.root).body()
    return other + "\n" + cosign(other, W1, T)


def _log_only(api: Api) -> str:
    return api.http.get("/v1/audit/checkpoint").text  # the log's signature, no cosignature


def _with_stranger(api: Api) -> str:
    """W1's valid line, and one by a key the broker does not know: all or none."""
    body = _cosigned(api, W1)
    return body + cosign(_body(body), Cosigner("stranger.example", new_key()), T)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda api: _cosigned(api, W3), "line 1 .*witness.w3.example.* is not by a registered"),
        (_with_stranger, "line 2 .*stranger.example.* is not by a registered witness"),
        (_tampered, "invalid cosignature by witness.w1.example"),
        (_never_signed, "signed another checkpoint of size"),
        (_no_such_size, "signed no checkpoint of size"),
        (_other_log, "a checkpoint of another log"),
        (lambda api: _cosigned(api, W1, 4_000_000_000), "dated .* ahead of this broker's clock"),
        (_log_only, "no cosignature by a registered witness"),
        (lambda api: "", "not a cosigned checkpoint: note has no blank line"),
        (lambda api: "hello\n", "not a cosigned checkpoint"),
        (lambda api: b"\xff\xfe\n\n\x00", "not a cosigned checkpoint"),
        (lambda api: "a\n1\nAAAA\n\n\u2014 w AAAA\n", "not a cosigned checkpoint"),
        (lambda api: _body(_log_only(api)) + "\n", "not a cosigned checkpoint"),
    ],
)
def test_what_is_not_a_registered_witness_s_valid_cosignature_is_refused(
    api: Api, make: Any, reason: str
) -> None:
    _grow(api, 0)
    api.service.witnesses.add(W1.vkey())
    api.service.witnesses.add(W2.vkey())
    _grow(api, 1)
    r = _post(api, make(api))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    import re

    assert re.search(reason, r.json()["detail"]), r.json()
    assert _stored(api) == []
    _, signatures = parse_note(api.http.get("/v1/audit/checkpoint").content)
    assert len(signatures) == 1  # the log's alone


def test_an_oversized_body_is_413(api: Api) -> None:
    _grow(api, 0)
    api.service.witnesses.add(W1.vkey())
    body = _cosigned(api, W1)
    big = body + ("\u2014 w " + "A" * 200 + "\n") * (MAX_COSIGNED_BYTES // 200)
    r = _post(api, big)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    r = api.http.post(COSIGNATURES, content=b"x" * (70 * 1024))  # past the broker's limit too
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert _stored(api) == []


def test_a_checkpoint_replaced_meanwhile_is_409_and_thinning_keeps_cosigned_ones(
    api_each_store: Api,
) -> None:
    """One checkpoint an hour is kept, and the newest: a newer one replaces the newest,
    unless a witness cosigned it. A cosignature that arrives after its checkpoint was
    replaced is a 409 (the witness cosigns the newest instead)."""
    api = api_each_store
    api.service.witnesses.add(W1.vkey())
    first = _grow(api, 0)  # the first checkpoint stays (nothing before it)
    second = _grow(api, 1)
    late = _cosigned(api, W1)  # a cosignature of `second`, on its way
    third = _grow(api, 2)  # replaces `second`
    with api.store.transaction(write=False) as tx:
        assert [int(r["size"]) for r in tx.note_rows()] == [first, third] != [first, second]
    r = _post(api, late)
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert "cosign the newest" in r.json()["detail"]
    assert _stored(api) == []
    assert _post(api, _cosigned(api, W1)).status_code == 200  # `third`, cosigned
    fourth = _grow(api, 3)
    fifth = _grow(api, 4)  # replaces `fourth` (not cosigned), keeps `third`
    with api.store.transaction(write=False) as tx:
        assert [int(r["size"]) for r in tx.note_rows()] == [first, third, fifth]
    assert api.http.get(f"/v1/audit/checkpoints/{third}").status_code == 200
    assert api.http.get(f"/v1/audit/checkpoints/{fourth}").status_code == 404
    assert api.service.audit.verify().intact


def test_a_witness_cosigning_every_ten_minutes_leaves_one_checkpoint_an_hour(
    api_each_store: Api,
) -> None:
    """W1 cosigns the newest checkpoint every 10 minutes for 2.5 hours, W2 only once at
    the start: the store keeps the first checkpoint, one an hour, each witness's newest
    cosigned one and the newest, not every checkpoint W1 ever cosigned; what it keeps
    verifies, with the cosignatures, and W1's newest word is served."""
    import functools

    api = api_each_store
    for w in (W1, W2):
        api.service.witnesses.add(w.vkey())
    start = api.service.clock()
    cosigned = {}
    for minute in range(0, 150, 10):
        api.service.clock = functools.partial(float.__add__, start + 60.0 * minute, 0.0)
        with api.store.transaction() as tx:  # events of the moved clock, no client asked
            api.service.audit.writer(tx).append(events.CLIENT_REMOVED(client=f"c-{minute}"))
        done = api.service.audit.integrate()
        assert done is not None and done.signed is not None
        size = done.size
        r = _post(api, _cosigned(api, W1, at=int(start) + 60 * minute))
        assert r.status_code == 200, r.text
        if minute == 0:
            assert _post(api, _cosigned(api, W2, at=int(start))).status_code == 200
        cosigned[minute] = size
    with api.store.transaction(write=False) as tx:
        kept = [(int(r["size"]), int(r["signed_at"]) - int(start)) for r in tx.note_rows()]
    assert [at for _, at in kept] == [0, 3600, 7200, 8400], kept  # W2's is the first
    assert [size for size, _ in kept] == [cosigned[m] for m in (0, 60, 120, 140)]
    # Only cosignatures of kept checkpoints remain: W1's of the hourly ones, W2's first.
    assert [(r["size"], r["witness"] == W1.vkey()) for r in _stored(api)] == [
        (cosigned[0], True), (cosigned[0], False), (cosigned[60], True),
        (cosigned[120], True), (cosigned[140], True),
    ]  # fmt: skip
    newest = open_note(api.http.get("/v1/audit/checkpoint").content, _identity(api).verifiers)
    assert cosignatures(newest, [W1.verifier(), W2.verifier()]) == {W1.vkey(): int(start) + 8400}
    report = api.service.audit.verify(policy=WitnessPolicy.of([W1.vkey()], 1))
    assert report.intact and report.witnessed_through == cosigned[140], report.problems


def test_cosignatures_racing_the_integrator_on_postgresql(
    settings: Settings, pg_schema_url: str
) -> None:
    """Witnesses post while another replica writes events, integrates and thins: every
    cosignature kept is of a checkpoint kept (it is stored under the integrator's lock),
    and the rest were told 409."""
    import functools

    from broker.errors import Conflict as Replaced
    from broker.service import open_service
    from tests.support.concurrency import together

    s = settings.model_copy(update={"database_url": pg_schema_url})
    replicas = [open_service(s), open_service(s)]
    try:
        replicas[0].witnesses.add(W1.vkey())
        replicas[0].audit.integrate()
        outcomes = {"kept": 0, "replaced": 0}

        def write(n: int) -> None:
            service = replicas[1]
            with service._store.transaction() as tx:
                service.audit.writer(tx).append(
                    events.TOKEN_LOOKUP(client="cc", staging_guid=f"{n}")
                )
            service.audit.integrate()

        def witness(n: int) -> None:
            service = replicas[0]
            note = service.cosignatures.cosigned()
            assert note is not None
            text = _body(note.decode())
            try:
                service.cosignatures.accept((text + "\n" + cosign(text, W1, T + n)).encode())
                outcomes["kept"] += 1
            except Replaced:
                outcomes["replaced"] += 1

        def loop(step: Any, rounds: int) -> None:
            for n in range(rounds):
                step(n)

        together([functools.partial(loop, write, 120), functools.partial(loop, witness, 120)])
        assert outcomes["kept"] > 0, outcomes
        with replicas[0]._store.transaction(write=False) as tx:
            kept = {int(r["size"]) for r in tx.note_rows()}
            cosigned = {int(r["size"]) for r in tx.cosignature_rows()}
        assert cosigned and cosigned <= kept, (cosigned - kept, outcomes)
        report = replicas[1].audit.verify(policy=WitnessPolicy.of([W1.vkey()], 1))
        assert report.intact and report.witnessed_through == max(cosigned), report.problems
    finally:
        for replica in replicas:
            replica.close()


# -- an auditor requires K witnesses ---------------------------------------------------


def _cosign_newest(api: Api, *witnesses: Cosigner) -> int:
    for w in witnesses:
        assert _post(api, _cosigned(api, w)).status_code == 200
    return api.service.audit.size()


def test_verify_requires_k_cosignatures(keep_all: Api) -> None:
    api = keep_all
    for w in (W1, W2, W3):
        api.service.witnesses.add(w.vkey())
    _grow(api, 0)
    witnessed = _cosign_newest(api, W1, W2)  # 2 of 3
    _grow(api, 1)  # a newer checkpoint, not cosigned
    identity = _identity(api)
    vkeys = [W1.vkey(), W2.vkey(), W3.vkey()]

    report = api.service.audit.verify(identity, WitnessPolicy.of(vkeys, 2))
    assert report.intact, report.problems
    assert (report.witnessed_through, report.witnesses_found) == (witnessed, 2)
    assert f"witnessed: checkpoint {witnessed} cosigned by 2 of the given witnesses" in (
        report.summary()
    )
    assert f"the events after {witnessed} signed by the log alone" in report.summary()
    report = api.service.audit.verify(identity, WitnessPolicy.of(vkeys, 3))
    assert not report.intact
    assert report.problems == [
        "witnesses: no checkpoint is cosigned by 3 of the 3 given witnesses"
        f" (at most 2, on checkpoint {witnessed})"
    ]
    # Only the witnesses the auditor names count.
    report = api.service.audit.verify(identity, WitnessPolicy.of([W3.vkey()], 1))
    assert report.problems == [
        "witnesses: no checkpoint is cosigned by 1 of the 1 given witnesses (none found)"
    ]

    # An export carries the cosignatures: the same, offline.
    lines = list(api.service.audit.export(AuditFilter(), {}))
    assert sum(W1.name in line for line in lines if '"checkpoint"' in line) == 1
    offline = LogIdentity.from_vkeys(identity.vkeys())
    report = verify_export(lines, offline, policy=WitnessPolicy.of(vkeys, 2))
    assert report.intact and report.witnessed_through == witnessed, report.problems
    report = verify_export(lines, offline, policy=WitnessPolicy.of(vkeys, 3))
    assert not report.intact and "cosigned by 3 of the 3" in report.problems[0]
    # Cosignatures moved onto another checkpoint do not count there.
    report = verify_export(_moved(lines, witnessed), offline, policy=WitnessPolicy.of(vkeys, 1))
    assert report.problems == [
        "witnesses: no checkpoint is cosigned by 1 of the 3 given witnesses (none found)"
    ]

    # A filtered export proves its events against its seal only: the seal must carry them.
    staging = make_filter(staging="stg-0")
    filtered = list(api.service.audit.export(staging, {"staging": "stg-0"}))
    report = verify_export(filtered, offline, policy=WitnessPolicy.of(vkeys, 2))
    assert not report.intact and "the seal is cosigned by 0 of the 3" in report.problems[0]
    _cosign_newest(api, W1, W2)
    filtered = list(api.service.audit.export(staging, {"staging": "stg-0"}))
    report = verify_export(filtered, offline, policy=WitnessPolicy.of(vkeys, 2))
    assert report.intact, report.problems


def _moved(lines: list[str], size: int) -> list[str]:
    """The export with the cosignatures of checkpoint ``size`` moved to the last one."""
    notes = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "checkpoint"]
    moved: list[str] = []
    out = list(lines)
    for i in notes:
        note = json.loads(lines[i])["note"]
        text, signatures = parse_note(note.encode())
        if parse_checkpoint(text).size == size:
            moved = [s.line() for s in signatures[1:]]
            out[i] = json.dumps({"type": "checkpoint", "note": text + "\n" + signatures[0].line()})
    last = notes[-1]
    cosigned = add_signatures(json.loads(out[last])["note"].encode(), moved).decode()
    out[last] = json.dumps({"type": "checkpoint", "note": cosigned})
    return out


def test_a_witness_policy_is_checked() -> None:
    with pytest.raises(NoteError, match="between 1 and the 2"):
        WitnessPolicy.of([W1.vkey(), W2.vkey()], 3)
    with pytest.raises(NoteError, match="between 1 and the 1"):
        WitnessPolicy.of([W1.vkey(), W1.vkey()], 2)  # the same witness twice is one
    with pytest.raises(NoteError, match="no witness key"):
        WitnessPolicy.of(["", " "], 1)
    with pytest.raises(NoteError, match="signature type is 0x01"):
        WitnessPolicy.of([Signer("log.example/audit", new_key()).vkey()], 1)


# -- the audit page ----------------------------------------------------------------------


def test_the_page_shows_the_witnesses(api: Api) -> None:
    api.http.cookies.set("stager_audit", api.service.auditors.start(api.clients.auditor.name, 60))
    page = api.http.get("/audit")
    assert "No witnesses registered" in page.text
    api.service.witnesses.add(W1.vkey())
    api.service.witnesses.add(W2.vkey())
    size = _grow(api, 0)
    _cosign_newest(api, W1)
    page = api.http.get("/audit")
    assert page.status_code == 200
    assert "script" not in page.headers["content-security-policy"]
    assert "<script" not in page.text
    assert "cosigned by <strong>1</strong> of 2 registered: witness.w1.example" in page.text
    assert f"checkpoint {size} (the newest)" in page.text
    assert "never" in page.text  # W2


# -- key files -----------------------------------------------------------------------------


def test_a_witness_key_file_records_its_name(tmp_path: Path) -> None:
    path = tmp_path / "w.key"
    write_cosigner(path, W1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"witness-name: witness.w1.example\n-----BEGIN PRIVATE")
    again = read_cosigner(path)
    assert again.name == W1.name and again.vkey() == W1.vkey()
    with pytest.raises(NoteError, match="refusing to overwrite"):
        write_cosigner(path, W2)
    with pytest.raises(NoteError, match="PKCS#8"):
        read_private_key(path)  # not a log key file
    plain = tmp_path / "plain.key"
    write_private_key(plain, new_key())
    with pytest.raises(NoteError, match="not a witness key file"):
        read_cosigner(plain)
    path.chmod(0o640)
    with pytest.raises(NoteError, match="mode 0640") as refused:
        read_cosigner(path)
    assert "PRIVATE" not in str(refused.value)
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"witness-name: a b\n" + plain.read_bytes())
    bad.chmod(0o600)
    with pytest.raises(NoteError, match="contains a space"):
        read_cosigner(bad)


# -- the witness's side, in-process ---------------------------------------------------------


class _Through:
    """The witness's HTTP, through the in-process app; ``serve`` may replace the
    checkpoint the log shows (a fork), and every POST is counted."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.serve: bytes | None = None
        self.posts = 0
        self.down = False

    def get(self, path: str, limit: int) -> tuple[int, bytes]:
        if self.down:
            raise RoundFailed("cannot reach the broker")
        if path == "/v1/audit/checkpoint" and self.serve is not None:
            return 200, self.serve
        r = self.api.http.get(path)
        return r.status_code, r.content

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.posts += 1
        r = self.api.http.post(path, content=body)
        return r.status_code, r.content


def _witness(api: Api, tmp_path: Path, http: _Through, pin: bool = True) -> Witness:
    keys = _identity(api).vkeys() if pin else []
    return Witness(W1, http, StateFile(tmp_path / "state.json"), keys)


def test_the_witness_cosigns_only_what_extends_what_it_cosigned(api: Api, tmp_path: Path) -> None:
    api.service.witnesses.add(W1.vkey())
    first = _grow(api, 0)
    http = _Through(api)
    witness = _witness(api, tmp_path, http)
    done = witness.round()
    assert (done.checkpoint.size, done.previous, done.kept) == (first, None, True)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["size"] == first and state["log_keys"] == _identity(api).vkeys()
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600
    again = witness.round()  # nothing new: the same checkpoint, cosigned again
    assert again.checkpoint.size == first and "again" in again.describe()
    second = _grow(api, 1)
    done = witness.round()  # a consistency proof from `first`
    assert (done.checkpoint.size, done.previous) == (second, first)
    assert "consistent with checkpoint" in done.describe()
    before = (tmp_path / "state.json").read_bytes()
    posts = http.posts
    identity = _identity(api)

    # A fork: the log's own key signs another root at the size the witness cosigned.
    http.serve = identity.sign(second, bytes(32)).note
    with pytest.raises(Misbehaved, match=rf"^fork: the log's checkpoint {second} has root"):
        witness.round()
    # A rollback: an older checkpoint, genuinely signed.
    http.serve = api.service.cosignatures.cosigned(first)
    with pytest.raises(Misbehaved, match=rf"^rollback: .* {first} events, fewer than the {second}"):
        witness.round()
    # A larger tree that does not extend it: the proof fails.
    third = _grow(api, 2)
    http.serve = identity.sign(third, bytes(32)).note
    with pytest.raises(Misbehaved, match=r"does not extend checkpoint .* consistency proof fails"):
        witness.round()
    # A checkpoint another key signed.
    other = LogIdentity("broker.test/audit", {}, new_key())
    http.serve = other.sign(third, bytes(32)).note
    with pytest.raises(Misbehaved, match="does not verify with the log's key"):
        witness.round()
    assert http.posts == posts and (tmp_path / "state.json").read_bytes() == before
    http.serve = None
    assert witness.round().checkpoint.size == third  # the true log again


def test_the_witness_state_is_never_reset_silently(api: Api, tmp_path: Path) -> None:
    api.service.witnesses.add(W1.vkey())
    _grow(api, 0)
    http = _Through(api)
    messages: list[str] = []
    witness = Witness(W1, http, StateFile(tmp_path / "state.json"), warn=messages.append)
    witness.round()  # trust on first use: the key is fetched, said so, and kept
    assert len(messages) == 1 and "trust on first use" in messages[0]
    witness.round()
    assert len(messages) == 1  # the kept key, not fetched again
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(SetupError, match=r"not a witness state file.*restore it"):
        witness.round()
    assert http.posts == 2
    state.unlink()
    other = LogIdentity("other.example/audit", {}, new_key())
    state.write_text(json.dumps({"version": 1, "origin": "broker.test/audit", "size": 1,
                                 "root": base64.b64encode(bytes(32)).decode(),
                                 "cosigned_at": 0, "log_keys": []}))  # fmt: skip
    with pytest.raises(SetupError, match=r"state file is for the log broker\.test/audit"):
        Witness(W1, http, StateFile(state), other.vkeys()).round()
    # One witness at a time per state file.
    with StateFile(state).locked(), pytest.raises(SetupError, match="another witness"):
        witness.round()
    assert os.path.exists(str(state) + ".lock")


def test_the_witness_command_loops_and_stops_at_a_fork(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`broker audit witness` without --once: a round every --interval, bounded here."""
    from broker.cli.witness import MISBEHAVED, run_witness

    api.service.witnesses.add(W1.vkey())
    _grow(api, 0)
    http = _Through(api)
    witness = _witness(api, tmp_path, http)
    assert run_witness(witness, rounds=3, interval=0.01) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 3 and out.err == ""
    http.serve = _identity(api).sign(api.service.audit.size(), bytes(32)).note
    assert run_witness(witness, rounds=None, interval=0.01) == MISBEHAVED  # stops at once
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1
    assert out.err.startswith("broker audit witness: REFUSED to cosign: fork: ")
    http.serve, http.down = None, True  # the broker unreachable: each round fails
    assert run_witness(witness, rounds=2, interval=0.01) == 1
    assert capsys.readouterr().err.count("round failed") == 2
