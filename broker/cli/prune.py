"""`broker prune`: the I/O around ``broker/prune.py``'s decisions."""

from __future__ import annotations

import argparse
import sys
import time

from broker.errors import PruneRefused
from broker.prune import (
    Target,
    load_lrps,
    parse_duration,
    plan,
    read_lrps,
    sort_lrps,
    unnamed,
    walk,
)
from broker.service import open_service
from broker.settings import get_settings
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
    target = Target.of(args.registry, args.registry_alias, args.insecure_registry)
    # Refuse before any I/O on the registry or the database.
    listed = load_lrps(args.desired_lrps, allow_http=args.insecure_desired_lrps)
    images = read_lrps(listed, args.domain)
    mismatch = unnamed(sort_lrps(images, target), target)
    if mismatch and args.apply and not args.allow_no_lrps:
        raise PruneRefused(f"{mismatch}; nothing was deleted")
    service = open_service(settings, migrate=False)  # reads stagings, appends events
    try:
        # The broker's own tokens: full access to exactly what each request needs.
        transport = Transport(
            args.registry,
            TokenProvider(service.registry.own_token),
            InsecureHosts(args.insecure_registry),
        )
        started = time.time()  # what the walk saw holds from here (Plan.gone)
        try:
            states = walk(transport)
        except TailorError as exc:
            raise PruneRefused(
                f"the registry failed during the walk; nothing was deleted: {exc}"
            ) from None
        stagings = service.stagings.all()
        decided = plan(
            states,
            target=target,
            lrp_images=images,
            stagings=stagings,
            prefix=settings.registry_prefix,
            grace=grace,
            now=started,
        )
        for repo, why in sorted(decided.kept.items()):
            print(f"keep    {repo}  ({why})")
        for repo, digest, why in decided.kept_images:
            print(f"keep    {repo}@{digest}  ({why})")
        for image, why in decided.ignored:
            print(f"ignore  {image}  ({why})")
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
            service.registry.pruned(repo, digest, tags)
            deleted += 1
        if args.apply and decided.gone:
            # Only once every deletion is done: retention may then forget these rows.
            service.registry.repositories_gone(decided.gone, int(started))
        n = len(decided.delete)
        what = "deleted" if args.apply else "would be deleted"
        print(
            f"{n} manifest(s) {what}; {_human(decided.freed_bytes)} of blobs no kept image "
            "uses" + (" (freed by garbage collection)" if args.apply else "")
        )
        if decided.gone:
            marked = "marked" if args.apply else "would be marked"
            print(
                f"{len(decided.gone)} closed staging(s) {marked} as having no repository left "
                "(retention may forget them: BROKER_STAGING_RETENTION)"
            )
        if args.apply and n:
            print(
                "next: make the registry read-only or stop it, run "
                "'docker-registry garbage-collect CONFIG', start it again"
            )
    finally:
        service.close()
    if mismatch:
        if args.allow_no_lrps:
            then = "went ahead" if args.apply else "--apply would go ahead"
            then += " (--allow-no-lrps)"
        else:
            then = "--apply would refuse"
        sys.stderr.write(f"broker: warning: {mismatch}; {then}\n")
    return 0
