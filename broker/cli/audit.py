"""`broker audit list|export|verify|log-key|receipt|fingerprint|login|witness|witnesses`."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit import FILTERS, AuditFilter, AuditLog, Report, make_filter
from broker.audit.checkpoints import LogIdentity
from broker.audit.export import verify_export_file
from broker.audit.note import NoteError
from broker.audit.receipts import receipt, verify_receipt, write_receipt
from broker.audit.witnesses import WitnessPolicy
from broker.errors import ExportError, KeyFileError, SetupError
from broker.keys import audit_kid, load_keys
from broker.service import Service, open_reader, open_service
from broker.settings import get_settings
from broker.tokens import fingerprint
from tailor.jose import b64url_decode

__all__ = ["run"]


def _shown(args: argparse.Namespace) -> dict[str, Any]:
    """The filters as the auditor gave them."""
    return {k: getattr(args, k) for k in FILTERS if getattr(args, k, None)}


def _filter(args: argparse.Namespace) -> AuditFilter:
    try:
        return make_filter(**_shown(args))
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    action = args.action
    if action in ("witness", "witnesses"):
        from broker.cli import witness

        return witness.witness(args) if action == "witness" else witness.witnesses(args)
    if action == "fingerprint":
        return _fingerprint()
    if action == "log-key":
        settings = get_settings()
        keys = load_keys(settings.keys_dir)
        identity = LogIdentity(settings.log_origin(), keys.audit_public, keys.audit_key)
        print("\n".join(identity.vkeys()))
        return 0
    if action == "verify" and args.receipt:
        return _verify_receipt(args)
    if action == "receipt":
        with open_reader(get_settings()) as reader:
            done = receipt(reader.audit, reader.cosignatures, args.staging)
        try:
            written = write_receipt(done, args.out)
        except OSError as exc:
            raise SetupError(f"cannot write the receipt into {args.out}: {exc.strerror}") from None
        print(
            f"{len(written) // 2} events of staging {done.staging_guid}, proven in the log of"
            f" {done.checkpoint.size} events: {args.out}"
        )
        return 0
    if action == "verify" and args.file:
        trusted = [_read(path) for path in args.trusted_checkpoint]
        origin = _export_origin(args.file)
        identity = _identity(args, origin)
        return _print(verify_export_file(args.file, identity, trusted, _policy(args)))
    settings = get_settings()
    if action in ("list", "verify"):
        # Read only: an auditor with database access needs no key material.
        with open_reader(settings) as reader:
            if action == "list":
                return _list(reader.audit, args)
            if args.trusted_checkpoint:
                raise SetupError("--trusted-checkpoint checks an export: give --file")
            identity = _identity(args, settings.log_origin())
            return _print(reader.audit.verify(identity, _policy(args)))
    service = open_service(settings, migrate=False)  # signs (an export's seal, a ticket)
    try:
        if action == "login":
            return _login(service, args)
        for line in service.audit.export(_filter(args), _shown(args)):
            sys.stdout.write(line + "\n")
        return 0
    finally:
        service.close()


def _list(audit: AuditLog, args: argparse.Namespace) -> int:
    records = audit.page(0, max(1, args.limit), _filter(args))
    if args.format == "json":
        for record in records:
            print(json.dumps(record.as_dict(), sort_keys=True))
        return 0
    print(f"{'SEQ':>5} {'AT':<29} {'EVENT':<19} {'CLIENT':<18} {'STAGING':<38} REASON")
    for e in records:
        print(
            f"{e.seq:>5} {e.at:<29} {e.event:<19} {(e.client or '-'):<18} "
            f"{(e.staging_guid or '-'):<38} {e.reason or ''}"
        )
    return 0


def _keys_from(args: argparse.Namespace) -> dict[str, ed25519.Ed25519PublicKey] | None:
    """The verification keys the auditor named (None: the broker's own)."""
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
                raw = b64url_decode(str(jwk["x"]), canonical=False)
                keys[str(jwk["kid"])] = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return keys
    return None


def _print(report: Report) -> int:
    print(report.summary())
    shown = report.proved[-5:]
    if len(report.proved) > len(shown):
        print(f"  ({len(report.proved) - len(shown)} older checkpoints proved their events too)")
    for line in shown:
        print(f"  + {line}")
    for problem in report.problems[:20]:
        print(f"  - {problem}")
    if len(report.problems) > 20:
        print(f"  ... and {len(report.problems) - 20} more")
    return 0 if report.intact else 1


def _verify_receipt(args: argparse.Namespace) -> int:
    """``verify --receipt DIR --log-key VKEY``: every entry proven in the signed log."""
    if not args.log_key:
        raise SetupError("a receipt is checked against the log's verifier key: give --log-key")
    checked, problems = verify_receipt(args.receipt, _identity(args, ""))
    print(f"{checked - len(problems)}/{checked} entries proven in the signed log")
    for problem in problems[:20]:
        print(f"  - {problem}")
    return 0 if not problems else 1


def _identity(args: argparse.Namespace, origin: str) -> LogIdentity:
    """The log as the auditor names it: verifier keys (``--log-key``), or public keys
    (``--public-key``, ``--jwks``) under ``origin``, else the broker's own keys."""
    try:
        if args.log_key:
            vkeys: list[str] = []
            for given in args.log_key:
                path = Path(given)
                vkeys += _read(path).decode().split("\n") if path.is_file() else [given]
            return LogIdentity.from_vkeys(vkeys)
        named = _keys_from(args)
        keys = named if named is not None else load_keys(get_settings().keys_dir).audit_public
        return LogIdentity(origin, keys)
    except (NoteError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"bad log key: {exc}") from None


def _policy(args: argparse.Namespace) -> WitnessPolicy | None:
    """``--witness`` keys (or files of them) and ``--min-witnesses``: what must cosign."""
    if not args.witness:
        if args.min_witnesses is not None:
            raise SetupError("--min-witnesses needs the witnesses' keys: give --witness VKEY")
        return None
    vkeys: list[str] = []
    for given in args.witness:
        path = Path(given)
        vkeys += _read(path).decode(errors="replace").split("\n") if path.is_file() else [given]
    try:
        return WitnessPolicy.of(vkeys, 1 if args.min_witnesses is None else args.min_witnesses)
    except NoteError as exc:
        raise KeyFileError(f"bad witness key: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror}") from None


def _export_origin(path: Path) -> str:
    """The origin an export's header names (for keys given without one)."""
    try:
        with path.open(encoding="utf-8", newline="\n") as f:
            header = json.loads(f.readline())
        return str(header["origin"])
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError):
        raise ExportError(f"{path} is not an audit export (version 2)") from None


def _fingerprint() -> int:
    token = sys.stdin.read().strip()
    if not token:
        raise SetupError("give the token on stdin")
    print(fingerprint(load_keys(get_settings().keys_dir).fingerprint_key, token))
    return 0


def _login(service: Service, args: argparse.Namespace) -> int:
    if not 1 <= args.minutes <= 60:
        raise SetupError("--minutes must be between 1 and 60")
    ticket = service.auditors.ticket(args.client, args.minutes)
    print(f"{service.settings.public_url.rstrip('/')}/audit/session?ticket={ticket}")
    return 0
