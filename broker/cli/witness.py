"""`broker audit witness` (a witness's own command, run by someone other than the
operator: no database, no broker keys) and `broker audit witnesses add|list|remove`
(the operator registers witnesses)."""

from __future__ import annotations

import argparse
import datetime
import socket
import sys
import time
from pathlib import Path

from broker.audit.note import Cosigner, NoteError, new_key, read_cosigner, write_cosigner
from broker.audit.witness import BrokerHttp, Misbehaved, RoundFailed, StateFile, Witness
from broker.errors import SetupError
from broker.service import open_reader, open_service
from broker.settings import get_settings

__all__ = ["MISBEHAVED", "run_witness", "witness", "witnesses"]

MISBEHAVED = 3
"""The exit status when the log showed a fork, a rollback or a bad signature."""


def _say(line: str) -> None:
    sys.stderr.write(f"broker audit witness: {line}\n")
    sys.stderr.flush()


def _log_keys(given: list[str]) -> list[str]:
    """``--log-key`` values: verifier keys, or files of them (one a line)."""
    vkeys: list[str] = []
    for value in given:
        path = Path(value)
        if path.is_file():
            try:
                vkeys += path.read_text().split("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise SetupError(f"cannot read {path}: {exc}") from None
        else:
            vkeys.append(value)
    return [v.strip() for v in vkeys if v.strip()]


def _init(path: Path, name: str | None) -> int:
    name = name or f"witness.{socket.gethostname()}"
    try:
        cosigner = Cosigner(name, new_key())
        write_cosigner(path, cosigner)
    except NoteError as exc:
        raise SetupError(str(exc)) from None
    print(cosigner.vkey())
    _say(f"wrote {path}; the operator registers it with: broker audit witnesses add VKEY")
    return 0


def run_witness(witness: Witness, *, rounds: int | None, interval: float) -> int:
    """Run ``rounds`` rounds (None: for ever), ``interval`` seconds apart. 0 when the last
    round cosigned, 1 when it failed, MISBEHAVED at once when the log misbehaved."""
    done = 0
    status = 0
    while rounds is None or done < rounds:
        if done:
            time.sleep(interval)
        done += 1
        try:
            print(witness.round().describe(), flush=True)
            status = 0
        except Misbehaved as exc:
            _say(f"REFUSED to cosign: {exc}")
            return MISBEHAVED
        except RoundFailed as exc:
            _say(f"round failed: {exc}")
            status = 1
    return status


def witness(args: argparse.Namespace) -> int:
    if args.init:
        if args.key or args.broker or args.state:
            raise SetupError("--init creates a key: give it alone (with --name)")
        return _init(args.init, args.name)
    if not args.key:
        raise SetupError("give --init KEYFILE, or --key KEYFILE (with --broker and --state)")
    try:
        cosigner = read_cosigner(args.key)
    except NoteError as exc:
        raise SetupError(str(exc)) from None
    if not args.broker and not args.state:
        print(cosigner.vkey())  # the verifier key, again
        return 0
    if not (args.broker and args.state):
        raise SetupError("a witness needs --broker URL and --state FILE")
    if args.interval < 1:
        raise SetupError("--interval must be at least 1 second")
    w = Witness(
        cosigner,
        BrokerHttp(args.broker),
        StateFile(args.state),
        _log_keys(args.log_key),
        warn=_say,
    )
    return run_witness(w, rounds=1 if args.once else None, interval=args.interval)


def witnesses(args: argparse.Namespace) -> int:
    if args.witnesses_action == "list":
        with open_reader(get_settings()) as reader:
            rows = reader.cosignatures.witnesses()
        for w in rows:
            if w.last_cosigned_at is None:
                last = "never cosigned"
            else:
                at = datetime.datetime.fromtimestamp(w.last_cosigned_at, datetime.UTC)
                last = f"cosigned up to checkpoint {w.last_size}, last at {at:%Y-%m-%dT%H:%M:%SZ}"
            print(f"{w.vkey}  {last}")
        return 0
    service = open_service(get_settings())
    try:
        if args.witnesses_action == "add":
            added = service.witnesses.add(args.vkey)
            print(f"added witness {added.label}")
        else:
            removed = service.witnesses.remove(args.vkey)
            print(f"removed witness {removed.label}")
    finally:
        service.close()
    return 0
