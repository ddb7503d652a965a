"""The ``broker`` command. Bad input is one line and a non-zero exit, never a traceback.

This module parses the command line and dispatches; each command's work is in
``broker/cli/admin.py`` (serve, keys, clients, stagings, registry-config),
``broker/cli/audit.py`` and ``broker/cli/prune.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from broker import __version__
from broker.audit import CATALOG
from broker.errors import BrokerError
from broker.store.model import ROLES

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"broker: error: {message} (see '{self.prog} -h')\n")
        raise SystemExit(2)


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"a number from 1 to 256, not {text!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="broker", description="The image stager's credential broker.")
    p.add_argument("--version", action="version", version=f"broker {__version__}")
    cmds = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = cmds.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes on the one port (default 1; docs/deployment.md)",
    )

    keys = cmds.add_parser("keys", help="create and rotate key material in BROKER_KEYS_DIR")
    kc = keys.add_subparsers(dest="action", required=True, parser_class=_Parser)
    kc.add_parser("init", help="create every key (refuses to overwrite)")
    kc.add_parser("rotate", help="add a new current token key")
    kc.add_parser("list", help="token keys: ids, ages, which is current")
    retire = kc.add_parser("retire", help="drop a token key; tokens under it stop working")
    retire.add_argument("kid")

    kc_rotate = kc.choices["rotate"]
    kc_rotate.add_argument(
        "--audit",
        action="store_true",
        help="rotate the audit-signing key instead (old key kept to verify)",
    )

    audit = cmds.add_parser("audit", help="read, export and verify the audit log")
    ac = audit.add_subparsers(dest="action", required=True, parser_class=_Parser)
    readers = {
        "list": "events, filtered",
        "export": "events and checkpoints as JSON lines, for offline checks",
    }
    for name, text in readers.items():
        sub_ = ac.add_parser(name, help=text)
        sub_.add_argument("--app", metavar="GUID")
        sub_.add_argument("--staging", metavar="GUID")
        sub_.add_argument("--client", metavar="NAME")
        sub_.add_argument("--event", metavar="TYPE", help=f"one of: {', '.join(CATALOG)}")
        sub_.add_argument("--since", metavar="TIME", help="ISO 8601, e.g. 2026-11-30T10:00Z")
        sub_.add_argument("--until", metavar="TIME")
        if name == "list":
            sub_.add_argument("--format", choices=["table", "json"], default="table")
            sub_.add_argument("--limit", type=int, default=1000)
    verify = ac.add_parser(
        "verify",
        help="check every event against the tree and every signed checkpoint; exit 0 only if"
        " intact",
    )
    verify.add_argument("--file", type=Path, metavar="EXPORT", help="an export (offline)")
    keys_from = verify.add_mutually_exclusive_group()
    keys_from.add_argument(
        "--log-key",
        action="append",
        metavar="VKEY",
        help="the log's verifier key (name+id+key, as `broker audit log-key` prints), or a file"
        " of them",
    )
    keys_from.add_argument("--public-key", type=Path, action="append", metavar="PEM")
    keys_from.add_argument("--jwks", metavar="URL")
    verify.add_argument(
        "--trusted-checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint kept from before (a signed note): prove the log only grew since",
    )
    verify.add_argument(
        "--receipt",
        type=Path,
        metavar="DIR",
        help="a staging's receipt (INDEX.entry + INDEX.tlog-proof files), offline",
    )
    verify.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's verifier key (name+id+key, signature type 0x04), or a file of them;"
        " repeatable",
    )
    verify.add_argument(
        "--min-witnesses",
        type=int,
        metavar="K",
        help="require a checkpoint cosigned by K distinct given witnesses (default 1)",
    )
    ac.add_parser("log-key", help="print the log's verifier keys (current first)")
    receipt = ac.add_parser(
        "receipt", help="write a staging's events with their inclusion proofs, for offline checks"
    )
    receipt.add_argument("staging", metavar="STAGING")
    receipt.add_argument("--out", type=Path, required=True, metavar="DIR")
    witness = ac.add_parser(
        "witness",
        help="be a witness of a broker's log (someone other than its operator): check that"
        " its checkpoints only grow, and cosign them",
    )
    witness.add_argument(
        "--init", type=Path, metavar="KEYFILE", help="create a witness key; print its vkey"
    )
    witness.add_argument("--name", help="with --init: the witness's name (witness.<hostname>)")
    witness.add_argument(
        "--key", type=Path, metavar="KEYFILE", help="the witness key (alone: print its vkey)"
    )
    witness.add_argument("--broker", metavar="URL", help="the broker's public URL")
    witness.add_argument(
        "--state", type=Path, metavar="FILE", help="what the witness cosigned last (JSON)"
    )
    witness.add_argument(
        "--log-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="the log's verifier key, or a file of them (without it: fetched from the broker"
        " on first use and kept, trust on first use)",
    )
    witness.add_argument("--once", action="store_true", help="one round, then exit")
    witness.add_argument(
        "--interval", type=float, default=60.0, metavar="S", help="seconds between rounds (60)"
    )
    witnesses = ac.add_parser(
        "witnesses", help="the witnesses whose cosignatures the log accepts and serves"
    )
    wc = witnesses.add_subparsers(dest="witnesses_action", required=True, parser_class=_Parser)
    wc.add_parser("add", help="register a witness (audited)").add_argument("vkey", metavar="VKEY")
    wc.add_parser("list", help="registered witnesses and their last cosignatures")
    wc.add_parser("remove", help="unregister a witness (audited)").add_argument(
        "vkey", metavar="VKEY"
    )
    ac.add_parser("fingerprint", help="a token's keyed fingerprint (token on stdin)")
    login = ac.add_parser("login", help="print a short-lived link to the auditor page")
    login.add_argument("--client", required=True, metavar="NAME", help="an auditor client")
    login.add_argument("--minutes", type=int, default=10)

    rc = cmds.add_parser(
        "registry-config",
        help="print a Distribution config whose token auth trusts this broker",
    )
    rc.add_argument("--addr", required=True, metavar="HOST:PORT")
    rc.add_argument("--storage", required=True, choices=["filesystem", "s3"])
    rc.add_argument("--root", metavar="DIR", help="filesystem root, or a prefix in the bucket")
    rc.add_argument("--bucket")
    rc.add_argument("--region")
    rc.add_argument("--endpoint", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph RGW)")
    rc.add_argument(
        "--http-secret-file",
        type=Path,
        metavar="FILE",
        help="the http.secret shared by all replicas (default: a fresh one)",
    )

    prune = cmds.add_parser(
        "prune", help="delete staged images no app runs (dry run unless --apply)"
    )
    prune.add_argument("--registry", required=True, metavar="HOST[:PORT]")
    prune.add_argument(
        "--desired-lrps",
        required=True,
        metavar="FILE|URL",
        help="the desired LRP list: a file, or an https URL (no proxy; redirects on its host)",
    )
    prune.add_argument(
        "--insecure-desired-lrps",
        action="store_true",
        help="allow a plain-HTTP --desired-lrps URL (the list decides deletions)",
    )
    prune.add_argument("--grace", default="24h", metavar="DURATION", help="keep younger (24h)")
    prune.add_argument("--apply", action="store_true", help="delete (default: only say what)")
    prune.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]")
    prune.add_argument("--domain", default="cf-apps", help="the LRP domain of staged apps")
    prune.add_argument(
        "--registry-alias",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another name of the registry pruned, as LRP images may name it (repeatable)",
    )
    prune.add_argument(
        "--allow-no-lrps",
        action="store_true",
        help="apply even when no desired LRP image names the registry pruned",
    )

    clients = cmds.add_parser("clients", help="register the clients that may call the broker")
    cc = clients.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = cc.add_parser("add", help="register a client and its public key")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--public-key", required=True, type=Path, metavar="PEMFILE")
    cc.add_parser("list", help="registered clients")
    remove = cc.add_parser("remove", help="unregister a client")
    remove.add_argument("name")

    stagings = cmds.add_parser("stagings", help="the stagings the broker keeps")
    sc = stagings.add_subparsers(dest="action", required=True, parser_class=_Parser)
    retention = sc.add_parser(
        "retention",
        help="closed stagings kept, and those retention forgets (BROKER_STAGING_RETENTION)",
    )
    retention.add_argument(
        "--apply", action="store_true", help="forget them now (default: only count)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "audit":
            from broker.cli.audit import run as audit

            return audit(args)
        if args.command == "prune":
            from broker.cli.prune import run as prune

            return prune(args)
        from broker.cli import admin

        commands = {
            "serve": admin.serve,
            "keys": admin.keys,
            "clients": admin.clients,
            "stagings": admin.stagings,
            "registry-config": admin.registry_config,
        }
        return commands[args.command](args)
    except BrokerError as exc:
        sys.stderr.write(f"broker: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
