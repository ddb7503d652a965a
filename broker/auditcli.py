"""`broker audit list|export|verify|fingerprint|login`."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker import sessions
from broker.audit import GENESIS, ChainEvent, Report, sign_checkpoint, timestamp, verify_chain
from broker.auditexport import export_lines, parse_export
from broker.auditquery import event_dict, make_filter
from broker.keys import KeyFileError, audit_kid, load_keys
from broker.service import chain_event, verify_stored_chain
from broker.settings import get_settings
from broker.store import StoreError, open_store

__all__ = ["run"]


class _Usage(Exception):
    pass


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("app", "staging", "client", "event", "since", "until")
            if getattr(args, k, None)}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    action = args.action
    if action == "fingerprint":
        return _fingerprint()
    if action == "login":
        return _login(args)
    if action == "verify" and args.file:
        return _verify_file(args)
    settings = get_settings()
    store = open_store(settings.database_url)
    try:
        if action == "list":
            return _list(store, args)
        if action == "export":
            return _export(store, args)
        return _verify_store(store, args)
    finally:
        store.close()


def _list(store: Any, args: argparse.Namespace) -> int:
    try:
        filters = make_filter(**_filters(args))
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    with store.transaction(write=False) as tx:
        rows = tx.audit_events(after=0, limit=max(1, args.limit), filters=filters)
    if args.format == "json":
        for row in rows:
            print(json.dumps(event_dict(row), sort_keys=True))
        return 0
    print(f"{'SEQ':>5} {'AT':<29} {'EVENT':<19} {'CLIENT':<18} {'STAGING':<38} REASON")
    for row in rows:
        e = row.event
        print(f"{row.seq:>5} {row.at:<29} {e.event:<19} {(e.client or '-'):<18} "
              f"{(e.staging_guid or '-'):<38} {e.reason or ''}")  # fmt: skip
    return 0


def _export(store: Any, args: argparse.Namespace) -> int:
    try:
        filters = make_filter(**_filters(args))
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    settings = get_settings()
    material = load_keys(settings.keys_dir)
    with store.transaction(write=False) as tx:
        selected = {r.seq for r in tx.audit_events(after=0, limit=10**9, filters=filters)}
    # The seal: a checkpoint over the head as it is now, signed with the audit key.
    with store.transaction() as tx:
        head_seq, head = tx.audit_head()
        if head_seq:
            seal = sign_checkpoint(material.audit_key, material.audit_kid, head_seq, head,
                                   timestamp(time.time()))  # fmt: skip
            tx.add_checkpoint(seal)
    first = min(selected) if selected else head_seq + 1
    with store.transaction(write=False) as tx:
        rows = tx.all_audit_events(after=first - 1) if selected else []
    with store.transaction(write=False) as tx:
        checkpoints = tx.checkpoints(from_seq=first, to_seq=head_seq)
    events = [chain_event(r) for r in rows if r.seq <= head_seq]
    for line in export_lines(events, checkpoints, _filters(args), first, head_seq, selected):
        sys.stdout.write(line + "\n")
    return 0


def _keys_from(args: argparse.Namespace) -> dict[str, ed25519.Ed25519PublicKey]:
    if args.public_key:
        keys = {}
        for path in args.public_key:
            try:
                key = serialization.load_pem_public_key(Path(path).read_bytes())
            except (OSError, ValueError) as exc:
                raise KeyFileError(f"cannot read public key {path}: {exc}") from None
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise KeyFileError(f"{path} is not an Ed25519 public key")
            keys[audit_kid(key)] = key
        return keys
    if args.jwks:
        try:
            with urllib.request.urlopen(args.jwks, timeout=10) as answer:  # noqa: S310
                data = json.loads(answer.read(1024 * 1024))
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read JWKS from {args.jwks}: {type(exc).__name__}") from None
        keys = {}
        for jwk in data.get("keys", []) if isinstance(data, dict) else []:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
                raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
                keys[str(jwk["kid"])] = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return keys
    return load_keys(get_settings().keys_dir).audit_public


def _print(report: Report) -> int:
    print(report.summary())
    for problem in report.problems[:20]:
        print(f"  - {problem}")
    if len(report.problems) > 20:
        print(f"  ... and {len(report.problems) - 20} more")
    return 0 if report.intact else 1


def _verify_store(store: Any, args: argparse.Namespace) -> int:
    return _print(verify_stored_chain(store, _keys_from(args)))


def _verify_file(args: argparse.Namespace) -> int:
    try:
        lines = args.file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {args.file}: {getattr(exc, 'strerror', exc)}") from None
    parsed = parse_export(lines)
    events: list[ChainEvent] = parsed.events
    anchor = GENESIS if events and events[0].seq == 1 else None
    report = verify_chain(events, parsed.checkpoints, _keys_from(args), anchor=anchor)
    last = parsed.header.get("last_seq")
    if isinstance(last, int) and last and not any(c.seq == last for c in parsed.checkpoints):
        report.problems.append(f"the export's seal (a checkpoint at event {last}) is missing")
    return _print(report)


def _fingerprint() -> int:
    from broker.tokens import fingerprint

    token = sys.stdin.read().strip()
    if not token:
        raise StoreError("give the token on stdin")
    print(fingerprint(load_keys(get_settings().keys_dir).fingerprint_key, token))
    return 0


def _login(args: argparse.Namespace) -> int:
    settings = get_settings()
    store = open_store(settings.database_url)
    try:
        with store.transaction(write=False) as tx:
            client = tx.get_client(args.client)
    finally:
        store.close()
    if client is None or client.role != "auditor":
        raise StoreError(f"{args.client!r} is not a registered auditor client")
    if not 1 <= args.minutes <= 60:
        raise StoreError("--minutes must be between 1 and 60")
    key = sessions.session_key(load_keys(settings.keys_dir).fingerprint_key)
    ticket = sessions.issue(key, args.client, "ticket", args.minutes * 60)
    print(f"{settings.public_url.rstrip('/')}/audit/session?ticket={ticket}")
    return 0
