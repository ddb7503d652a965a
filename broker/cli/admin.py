"""`broker serve`, `broker keys`, `broker clients`, `broker stagings`, `broker registry-config`."""

from __future__ import annotations

import argparse
import datetime
import json

from broker import keys as keyring
from broker.errors import Invalid, SetupError
from broker.service import open_reader, open_service
from broker.settings import get_settings

__all__ = ["clients", "keys", "registry_config", "serve", "stagings"]


def _age(created: str) -> str:
    try:
        then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return "?"
    now = datetime.datetime.now(datetime.UTC)
    seconds = int((now - then.replace(tzinfo=datetime.UTC)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def keys(args: argparse.Namespace) -> int:
    keys_dir = get_settings().keys_dir
    if args.action == "init":
        for name in keyring.init_keys(keys_dir):
            print(f"created {keys_dir / name}")
    elif args.action == "rotate" and args.audit:
        old, new = keyring.rotate_audit_key(keys_dir)
        print(f"new audit-signing key {new}; {old} kept for verification (restart brokers)")
    elif args.action == "rotate":
        kid = keyring.rotate_token_keys(keys_dir)
        print(f"new current token key {kid}; older keys still decrypt until retired")
    elif args.action == "retire":
        keyring.retire_token_key(keys_dir, args.kid)
        print(f"retired {args.kid}; tokens made under it are no longer accepted")
    else:
        print(f"{'KID':<18} {'CREATED':<21} {'AGE':>6}  CURRENT")
        for kid, created, current in keyring.list_token_keys(keys_dir):
            print(f"{kid:<18} {created:<21} {_age(created):>6}  {'yes' if current else ''}")
    return 0


def clients(args: argparse.Namespace) -> int:
    if args.action == "list":
        with open_reader(get_settings()) as reader:
            print(f"{'NAME':<24} {'ROLE':<8} ADDED")
            for row in reader.clients():
                added = datetime.datetime.fromtimestamp(row.created_at, datetime.UTC)
                print(f"{row.name:<24} {row.role:<8} {added:%Y-%m-%dT%H:%M:%SZ}")
        return 0
    service = open_service(get_settings())
    try:
        if args.action == "add":
            try:
                pem = args.public_key.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise SetupError(f"cannot read {args.public_key}: {reason}") from None
            try:
                service.clients.add(args.name, args.role, pem)
            except Invalid as exc:
                raise SetupError(f"{args.public_key}: {exc}") from None
            print(f"added {args.role} client {args.name}")
        else:
            service.clients.remove(args.name)
            print(f"removed client {args.name}")
    finally:
        service.close()
    return 0


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def stagings(args: argparse.Namespace) -> int:
    """``broker stagings retention [--apply]``: what retention keeps and may forget."""
    service = open_service(get_settings(), migrate=False)  # reads; --apply also audits
    try:
        retention = service.retention
        counts = retention.counts()
        print(
            f"{counts.closed} closed staging(s) kept; {counts.gone} of them with their "
            "repository gone (marked by broker prune --apply)"
        )
        if not retention.seconds:
            print("retention is off (BROKER_STAGING_RETENTION=0): no row is forgotten")
            return 0
        keep = _duration(retention.seconds)
        if not args.apply:
            print(f"{counts.due} of those closed more than {keep} ago: the sweeper forgets them")
            return 0
        forgotten = 0
        while batch := retention.sweep():
            forgotten += batch
        print(f"forgot {forgotten} closed more than {keep} ago (their audit events stay)")
    finally:
        service.close()
    return 0


def registry_config(args: argparse.Namespace) -> int:
    from broker.registryconfig import registry_config as config_for

    settings = get_settings()
    cert = (settings.keys_dir / keyring.REGISTRY_CERT).resolve()
    if not cert.exists():
        raise SetupError(f"{cert} not found; run 'broker keys init'")
    secret = None
    if args.http_secret_file:
        try:
            secret = args.http_secret_file.read_text().strip()
        except OSError as exc:
            raise SetupError(f"cannot read {args.http_secret_file}: {exc.strerror}") from None
    try:
        config = config_for(
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
        raise SetupError(str(exc)) from None
    print(json.dumps(config, indent=2))
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from broker.api.app import create_app
    from broker.api.httpguard import guarded_protocol
    from broker.logs import configure

    settings = get_settings()
    workers: int = args.workers
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SetupError("--tls-cert and --tls-key go together")
    if workers > 1 and settings.metrics_addr:
        # Each worker counts its own requests: one address cannot serve N processes' counts.
        raise SetupError("BROKER_METRICS_ADDR serves one process's metrics: not with --workers > 1")
    # JSON lines for every logger before the store opens (the pool logs while connecting).
    log_setup = configure(settings.log_level)
    common: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "ssl_certfile": str(args.tls_cert) if args.tls_cert else None,
        "ssl_keyfile": str(args.tls_key) if args.tls_key else None,
        "server_header": False,
        "timeout_graceful_shutdown": 5,
        "proxy_headers": False,
    }
    if workers == 1:
        # Keys and the store load now, so a misconfiguration is one line, not a traceback.
        app = create_app(settings)
        uvicorn.run(
            app,
            log_config=log_setup,
            # httptools with the head cap and the head and body deadlines.
            http=guarded_protocol(settings),
            **common,  # type: ignore[arg-type]
        )
        return 0
    # N workers: each builds its own app from the same settings (broker/cli/serving.py).
    # Keys, store and migrations are checked here once, before any worker starts, so a
    # misconfiguration is still one line from this process and no worker is spawned.
    open_service(settings).close()
    log_setup["filters"]["pid"] = {"()": "broker.cli.serving.WorkerPid"}
    log_setup["handlers"]["stderr"]["filters"] = ["pid"]
    uvicorn.run(
        "broker.cli.serving:app",
        factory=True,
        workers=workers,
        log_config=log_setup,
        http="broker.cli.serving:Protocol",
        **common,  # type: ignore[arg-type]
    )
    return 0
