"""The ``broker`` command: serve, keys, clients. Bad input is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from broker import __version__

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"broker: error: {message} (see '{self.prog} -h')\n")
        raise SystemExit(2)


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="broker", description="The image stager's credential broker.")
    p.add_argument("--version", action="version", version=f"broker {__version__}")
    cmds = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = cmds.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)

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
        sub_.add_argument("--event", metavar="TYPE")
        sub_.add_argument("--since", metavar="TIME", help="ISO 8601, e.g. 2026-11-30T10:00Z")
        sub_.add_argument("--until", metavar="TIME")
        if name == "list":
            sub_.add_argument("--format", choices=["table", "json"], default="table")
            sub_.add_argument("--limit", type=int, default=1000)
    verify = ac.add_parser("verify", help="check every link and checkpoint; exit 0 only if intact")
    verify.add_argument("--file", type=Path, metavar="EXPORT", help="an export (offline)")
    keys_from = verify.add_mutually_exclusive_group()
    keys_from.add_argument("--public-key", type=Path, action="append", metavar="PEM")
    keys_from.add_argument("--jwks", metavar="URL")
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
    prune.add_argument("--desired-lrps", required=True, metavar="FILE|URL")
    prune.add_argument("--grace", default="24h", metavar="DURATION", help="keep younger (24h)")
    prune.add_argument("--apply", action="store_true", help="delete (default: only say what)")
    prune.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]")
    prune.add_argument("--domain", default="cf-apps", help="the LRP domain of staged apps")

    clients = cmds.add_parser("clients", help="register the clients that may call the broker")
    cc = clients.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = cc.add_parser("add", help="register a client and its public key")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["cc", "tailor", "auditor", "puller"])
    add.add_argument("--public-key", required=True, type=Path, metavar="PEMFILE")
    cc.add_parser("list", help="registered clients")
    remove = cc.add_parser("remove", help="unregister a client")
    remove.add_argument("name")
    return p


def _age(created: str) -> str:
    try:
        then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        return "?"
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _keys(args: argparse.Namespace) -> int:
    from broker import keys
    from broker.settings import get_settings

    keys_dir = get_settings().keys_dir
    if args.action == "init":
        for name in keys.init_keys(keys_dir):
            print(f"created {keys_dir / name}")
    elif args.action == "rotate" and args.audit:
        old, new = keys.rotate_audit_key(keys_dir)
        print(f"new audit-signing key {new}; {old} kept for verification (restart brokers)")
    elif args.action == "rotate":
        kid = keys.rotate_token_keys(keys_dir)
        print(f"new current token key {kid}; older keys still decrypt until retired")
    elif args.action == "retire":
        keys.retire_token_key(keys_dir, args.kid)
        print(f"retired {args.kid}; tokens made under it are no longer accepted")
    else:
        print(f"{'KID':<18} {'CREATED':<21} {'AGE':>6}  CURRENT")
        for kid, created, current in keys.list_token_keys(keys_dir):
            print(f"{kid:<18} {created:<21} {_age(created):>6}  {'yes' if current else ''}")
    return 0


def _clients(args: argparse.Namespace) -> int:
    from broker.audit import timestamp
    from broker.auth import load_client_key
    from broker.settings import get_settings
    from broker.store import open_store
    from broker.store.model import AuditEvent, ClientRow

    store = open_store(get_settings().database_url)
    try:
        store.migrate()
        now = int(time.time())
        stamp = timestamp(time.time())
        if args.action == "add":
            try:
                pem = args.public_key.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(
                    f"cannot read {args.public_key}: {getattr(exc, 'strerror', exc)}"
                ) from None
            try:
                load_client_key(pem)
            except ValueError as exc:
                raise CliError(f"{args.public_key}: {exc}") from None
            with store.transaction() as tx:
                if not tx.add_client(ClientRow(args.name, args.role, pem, now)):
                    raise CliError(f"client {args.name!r} exists; remove it first")
                tx.append_audit(
                    AuditEvent("client.added", client=args.name, detail={"role": args.role}), stamp
                )
            print(f"added {args.role} client {args.name}")
        elif args.action == "remove":
            with store.transaction() as tx:
                if not tx.remove_client(args.name):
                    raise CliError(f"no client {args.name!r}")
                tx.append_audit(AuditEvent("client.removed", client=args.name), stamp)
            print(f"removed client {args.name}")
        else:
            with store.transaction() as tx:
                rows = tx.list_clients()
            print(f"{'NAME':<24} {'ROLE':<8} ADDED")
            for row in rows:
                added = datetime.datetime.fromtimestamp(row.created_at, datetime.UTC)
                print(f"{row.name:<24} {row.role:<8} {added:%Y-%m-%dT%H:%M:%SZ}")
    finally:
        store.close()
    return 0


def _registry_config(args: argparse.Namespace) -> int:
    import json

    from broker.keys import REGISTRY_CERT
    from broker.registryconfig import registry_config
    from broker.settings import get_settings

    settings = get_settings()
    cert = (settings.keys_dir / REGISTRY_CERT).resolve()
    if not cert.exists():
        raise CliError(f"{cert} not found; run 'broker keys init'")
    secret = None
    if args.http_secret_file:
        try:
            secret = args.http_secret_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.http_secret_file}: {exc.strerror}") from None
    try:
        config = registry_config(
            addr=args.addr,
            storage=args.storage,
            realm=settings.public_url.rstrip("/") + "/v1/registry-token",
            service=settings.registry_service,
            issuer=settings.registry_issuer,
            cert=cert,
            root=args.root,
            bucket=args.bucket,
            region=args.region,
            endpoint=args.endpoint,
            http_secret=secret,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(config, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from broker.logs import log_config
    from broker.settings import get_settings

    settings = get_settings()
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    # Load keys and the store now, so a misconfiguration is one line, not a traceback.
    from broker.app import create_app

    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=log_config(settings.log_level),
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        ssl_keyfile=str(args.tls_key) if args.tls_key else None,
        server_header=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pydantic import ValidationError

    from broker.auditexport import ExportError
    from broker.keys import KeyFileError
    from broker.prune import PruneRefused
    from broker.store import StoreError

    try:
        if args.command == "keys":
            return _keys(args)
        if args.command == "clients":
            return _clients(args)
        if args.command == "prune":
            from broker.prunecli import run as run_prune

            return run_prune(args)
        if args.command == "registry-config":
            return _registry_config(args)
        if args.command == "audit":
            from broker.auditcli import run

            return run(args)
        return _serve(args)
    except (CliError, KeyFileError, StoreError, ExportError, PruneRefused) as exc:
        sys.stderr.write(f"broker: error: {exc}\n")
        return 1
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        sys.stderr.write(f"broker: error: setting BROKER_{where.upper()}: {first.get('msg')}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
