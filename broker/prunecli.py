"""`broker prune`: the I/O around broker.prune's decisions."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from broker.audit import timestamp
from broker.keys import load_keys
from broker.prune import PruneRefused, load_lrps, parse_duration, plan, read_lrps, walk
from broker.registryauth import Access, issue_token, parse_scope
from broker.settings import get_settings
from broker.store import open_store
from broker.store.model import AuditEvent
from tailor.authn import TokenProvider
from tailor.errors import TailorError
from tailor.registry import Repository
from tailor.transport import InsecureHosts, Transport

__all__ = ["run"]


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    grace = parse_duration(args.grace)
    images = read_lrps(load_lrps(args.desired_lrps), args.domain)  # refuse before any I/O
    keys = load_keys(settings.keys_dir)

    def mint(scopes: Sequence[str]) -> str:
        # The broker's own token: full access to exactly what this request needs.
        access = [Access(s.type, s.name, s.actions) for s in map(parse_scope, scopes) if s]
        return issue_token(
            key=keys.registry_key,
            cert=keys.registry_cert,
            issuer=settings.registry_issuer,
            service=settings.registry_service,
            subject="broker",
            access=access,
            now=int(time.time()),
            lifetime=300,
        )

    transport = Transport(args.registry, TokenProvider(mint), InsecureHosts(args.insecure_registry))
    try:
        states = walk(transport)
    except TailorError as exc:
        raise PruneRefused(
            f"the registry failed during the walk; nothing was deleted: {exc}"
        ) from None
    store = open_store(settings.database_url)
    try:
        with store.transaction(write=False) as tx:
            stagings = tx.all_stagings()
        decided = plan(
            states,
            registry=args.registry,
            lrp_images=images,
            stagings=stagings,
            prefix=settings.registry_prefix,
            grace=grace,
        )
        for repo, why in sorted(decided.kept.items()):
            print(f"keep    {repo}  ({why})")
        verb = "delete" if args.apply else "would delete"
        deleted = 0
        for repo, digest, tags in decided.delete:
            print(f"{verb}  {repo}@{digest}  (tags: {', '.join(tags) or '-'})")
            if not args.apply:
                continue
            try:
                Repository(transport, repo).delete_manifest(digest)
            except TailorError as exc:
                raise PruneRefused(f"stopped after {deleted} deletion(s): {exc}") from None
            with store.transaction() as tx:
                tx.append_audit(
                    AuditEvent(
                        "prune.deleted",
                        client="broker",
                        detail={"repository": repo, "digest": digest, "tags": tags},
                    ),
                    timestamp(time.time()),
                )
            deleted += 1
        n = len(decided.delete)
        what = "deleted" if args.apply else "would be deleted"
        print(
            f"{n} manifest(s) {what}; {_human(decided.freed_bytes)} of blobs no kept image "
            "uses" + (" (freed by garbage collection)" if args.apply else "")
        )
        if args.apply and n:
            print(
                "next: make the registry read-only or stop it, run "
                "'docker-registry garbage-collect CONFIG', start it again"
            )
    finally:
        store.close()
    return 0
