"""`broker prune`: delete staged images no app runs; never one that may be in use.

Decide in pure functions (``read_lrps``, ``plan``), act in thin ones (``walk``,
``apply``). Kept, whatever else: every image a desired LRP references (by digest,
whatever its tag), every repository of a staging still open, every repository
younger than the grace period, and every repository the broker has no staging
record for (it did not make it, so it does not judge it). The walk completes
before anything is deleted, so a registry that errors mid-walk loses nothing.
The plan also names the closed stagings whose repository is gone for good (``gone``):
``--apply`` marks them, and only such a staging's row may be forgotten (retention:
``broker/service/retention.py``), for without its row prune would keep the repository.
An LRP image names the registry pruned when its registry is the same registry
(``Target``: by identity, not spelling, or an alias the operator names); when no
desired LRP image names it, ``unnamed`` says why pruning must not go ahead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from broker.errors import PruneRefused
from broker.settings import duration_seconds
from broker.store.model import OPEN_STATES, StagingRow
from tailor.errors import NotFound, TailorError
from tailor.manifest import Manifest
from tailor.naming import staging_repository
from tailor.outbound import AddressPolicy, fetch, parse_networks
from tailor.reference import Reference, parse_reference, registry_identity
from tailor.referrers import cosign_tags, fallback_tag
from tailor.registry import Repository, catalog
from tailor.transport import InsecureHosts, Transport

__all__ = [
    "SETTLED",
    "LrpImages",
    "Plan",
    "PruneRefused",
    "RepoState",
    "Target",
    "parse_duration",
    "plan",
    "read_lrps",
    "sort_lrps",
    "unnamed",
    "walk",
]

_MAX_LRPS = 64 * 1024 * 1024

SETTLED = 2 * 3600
"""Seconds after a staging closed from which nothing can push into its repository any
more: push is granted only while the staging is open, in registry tokens that live an hour
at most (``BROKER_REGISTRY_TOKEN_SECONDS`` <= 3600), which Distribution accepts 60 s past
their expiry; the rest is room for clocks that disagree."""
_OPERATOR_NAMED = AddressPolicy(parse_networks("0.0.0.0/0,::/0"))


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` -> seconds."""
    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise PruneRefused(str(exc)) from None


def load_lrps(source: str, *, allow_http: bool = False, deadline: float = 30.0) -> Any:
    """The desired-LRP list from a file or a URL. A URL is fetched through the outbound
    guard (tailor/outbound.py): https unless ``allow_http``, no proxy, redirects only
    on its own host and never to http, within ``deadline``. Its host may be on any
    address: the operator named it."""
    try:
        if urlsplit(source).scheme:
            where = urlsplit(source).hostname or source
            raw = fetch(
                source,
                policy=_OPERATOR_NAMED,
                deadline=deadline,
                max_bytes=_MAX_LRPS,
                allow_http=allow_http,
            )
        else:
            where = source
            with open(source, "rb") as f:
                raw = f.read(_MAX_LRPS + 1)
    except (OSError, TailorError, requests.RequestException) as exc:
        reason = str(exc) if isinstance(exc, TailorError) else type(exc).__name__
        raise PruneRefused(f"cannot read the desired LRPs from {where}: {reason}") from None
    if len(raw) > _MAX_LRPS:
        raise PruneRefused("the desired LRP list is larger than 64 MiB")
    try:
        return json.loads(raw)
    except ValueError:
        raise PruneRefused("the desired LRP list is not JSON") from None


def read_lrps(data: Any, domain: str) -> list[str]:
    """The images desired LRPs run; refuses a stale domain, an empty or malformed list."""
    if not isinstance(data, dict) or not isinstance(data.get("desired_lrps"), list):
        raise PruneRefused("malformed desired LRP list: no 'desired_lrps' array")
    domains = data.get("domains")
    if not isinstance(domains, dict) or not isinstance(domains.get(domain), dict):
        raise PruneRefused(f"domain {domain!r} is not in the list: it may be incomplete")
    if domains[domain].get("fresh") is not True:
        raise PruneRefused(f"domain {domain!r} is not fresh: the list may be incomplete")
    images = []
    for i, lrp in enumerate(data["desired_lrps"]):
        if not isinstance(lrp, dict) or not isinstance(lrp.get("image"), str):
            raise PruneRefused(f"malformed desired LRP #{i}: no image")
        if lrp.get("domain", domain) == domain:
            images.append(lrp["image"])
    if not images:
        raise PruneRefused(f"no desired LRP in domain {domain!r}: refusing to prune everything")
    return images


@dataclass
class RepoState:
    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    blobs: dict[str, dict[str, int]] = field(default_factory=dict)  # manifest -> blob sizes
    children: dict[str, list[str]] = field(default_factory=dict)  # index -> its manifests


def _blob_sizes(repo: Repository, manifest: Manifest) -> dict[str, int]:
    sizes: dict[str, int] = {}
    children = [repo.get_manifest(c.digest) for c in manifest.children] if manifest.is_index else []
    for m in [manifest, *children]:
        for d in m.blobs():
            sizes[d.digest] = d.size
    return sizes


def walk(transport: Transport) -> list[RepoState]:
    """Every repository, tag and manifest of the registry. Raises on any registry error."""
    states = []
    for name in catalog(transport):
        repo = Repository(transport, name)
        state = RepoState(name)
        try:
            tags = repo.tags()
        except NotFound:
            # The catalog named it, so it exists: a 404 (NAME_UNKNOWN) means it holds no
            # manifest at all (blobs of a copy that failed before its manifest). tags()
            # keeps the 404: for a name nobody vouched for it means "no such repository".
            tags = []
        for tag in tags:
            manifest = repo.get_manifest(tag)
            state.tags[tag] = manifest.digest
            if manifest.digest not in state.blobs:
                state.blobs[manifest.digest] = _blob_sizes(repo, manifest)
                state.children[manifest.digest] = [c.digest for c in manifest.children]
        states.append(state)
    return states


@dataclass(frozen=True)
class Target:
    """The registry pruned, known by what it is rather than how it is spelled: the
    identities (``tailor.reference.registry_identity``) of the name the operator prunes
    through and of every alias LRP images may name it by (``--registry-alias``). A name
    without a port gets its scheme's default port, the scheme being what the
    ``--insecure-registry`` list makes it (the transport decides the same way)."""

    registry: str
    identities: frozenset[str]
    insecure: InsecureHosts

    @classmethod
    def of(cls, registry: str, aliases: Iterable[str] = (), insecure: Iterable[str] = ()) -> Target:
        hosts = InsecureHosts(insecure)
        identities = frozenset(_identity(name, hosts) for name in [registry, *aliases])
        return cls(registry, identities, hosts)

    def identity(self, registry: str) -> str:
        """The identity of a registry an image reference names."""
        return registry_identity(registry, insecure=self.insecure(registry))

    def names(self, registry: str) -> bool:
        return self.identity(registry) in self.identities

    def __str__(self) -> str:
        return " or ".join(sorted(self.identities))


def _identity(name: str, insecure: InsecureHosts) -> str:
    try:
        return registry_identity(name, insecure=insecure(name))
    except TailorError as exc:
        raise PruneRefused(str(exc)) from None


@dataclass
class LrpImages:
    """The desired LRPs' images sorted against the registry pruned."""

    named: list[tuple[str, Reference]]  # image text, parsed: they name the registry pruned
    ignored: list[tuple[str, str]]  # image text, why it keeps nothing in this registry
    others: list[str]  # identities of the other registries they name, sorted
    foreign: list[tuple[str, Reference, str]]  # image text, parsed, why: another registry


def sort_lrps(lrp_images: Iterable[str], target: Target) -> LrpImages:
    named: list[tuple[str, Reference]] = []
    ignored: list[tuple[str, str]] = []
    foreign: list[tuple[str, Reference, str]] = []
    others: set[str] = set()
    for text in sorted(set(lrp_images)):
        try:
            ref = parse_reference(text)
            identity = target.identity(ref.registry)
        except TailorError:
            ignored.append((text, "not an image reference"))
            continue
        if identity in target.identities:
            named.append((text, ref))
            continue
        others.add(identity)
        why = (
            f"another registry: {identity}, not {target}; "
            "if it is the same, name it with --registry-alias"
        )
        foreign.append((text, ref, why))
    return LrpImages(named, ignored, sorted(others), foreign)


def unnamed(lrps: LrpImages, target: Target) -> str | None:
    """Why pruning must not go ahead when no desired LRP image names the registry pruned
    (the LRPs name it another way, or the wrong registry is pruned); None when some do."""
    if lrps.named:
        return None
    if lrps.others:
        shown = ", ".join(lrps.others[:5])
        more = f" and {len(lrps.others) - 5} more" if len(lrps.others) > 5 else ""
        theirs = f"they name {shown}{more}"
    else:
        theirs = "none of them is an image reference"
    return (
        f"no desired LRP image names the registry pruned ({target}); {theirs}: check "
        "--registry, name the registry as the cells do with --registry-alias, or pass "
        "--allow-no-lrps if truly no app runs from it"
    )


@dataclass
class Plan:
    delete: list[tuple[str, str, list[str]]]  # repository, digest, its tags
    kept: dict[str, str]  # repository kept whole -> why
    kept_images: list[tuple[str, str, str]]  # repository, digest, why (a desired LRP runs it)
    ignored: list[tuple[str, str]]  # a desired LRP's image, why it keeps nothing here
    freed_bytes: int
    gone: list[str] = field(default_factory=list)
    """Closed stagings (guids) whose repository is gone for good once ``delete`` is done:
    not in a catalog that holds repositories of this broker's stagings, or emptied of
    every tagged manifest here, and closed ``SETTLED`` before the walk (``now``) began,
    so nothing can push into it again. Only those not marked so already."""


def _attached(state: RepoState, kept: dict[str, str]) -> dict[str, str]:
    """The tagged manifests that hang on what is ``kept`` in ``state`` (digest -> the
    image it is kept for): its referrers' index (the ``sha256-HEX`` tag) and cosign's
    ``.sig``/``.att``/``.sbom`` tags, and theirs for each referrer in turn (a signature
    of an SBOM), each with why it stays. Without them a kept image would lose its
    signatures and attestations (tailor/referrers.py puts them there)."""
    out: dict[str, str] = {}
    todo = list(kept.items())
    seen = set(kept)
    while todo:
        digest, image = todo.pop()
        for tag in [fallback_tag(digest), *cosign_tags(digest)]:
            found = state.tags.get(tag)
            if found is None or found in seen:
                continue
            seen.add(found)
            out[found] = f"a signature or attestation of an image kept: {image}"
            todo += [(d, image) for d in [found, *state.children.get(found, [])]]
    return out


def plan(
    states: Iterable[RepoState],
    *,
    target: Target,
    lrp_images: Iterable[str],
    stagings: Iterable[StagingRow],
    prefix: str,
    grace: int,
    now: float | None = None,
) -> Plan:
    states = list(states)
    now = time.time() if now is None else now
    by_repo = {s.name: s for s in states}
    lrps = sort_lrps(lrp_images, target)
    ignored = list(lrps.ignored)
    keep_digests: set[tuple[str, str]] = set()
    kept_images: set[tuple[str, str, str]] = set()

    def keep(text: str, repository: str, digest: str, why: str) -> None:
        state = by_repo[repository]
        # An LRP may run an index's platform manifest: its index is kept with it.
        keep_digests.add((repository, digest))
        kept_images.add((repository, digest, f"{why}: {text}"))
        for top, children in state.children.items():
            if digest in children:
                keep_digests.add((repository, top))
                why_top = f"an index of a platform manifest a desired LRP runs: {text}"
                kept_images.add((repository, top, why_top))

    def held(repository: str, digest: str) -> bool:
        state = by_repo[repository]
        return digest in state.blobs or any(digest in c for c in state.children.values())

    for text, ref in lrps.named:
        state = by_repo.get(ref.repository)
        if state is None:
            ignored.append((text, f"the registry holds no repository {ref.repository}"))
            continue
        digest = ref.digest or state.tags.get(ref.tag or "latest")
        if digest is None:
            ignored.append((text, f"{ref.repository} has no tag {ref.tag}"))
            continue
        if not held(ref.repository, digest):
            ignored.append(
                (text, f"no tag of {ref.repository} leads to {digest}: prune leaves it alone")
            )
            continue
        keep(text, ref.repository, digest, "a desired LRP runs it")
    for text, ref, why in lrps.foreign:
        # Another registry's name, but this registry's repository and digest: a staged
        # repository is one push's own, so it is most likely this very image under a
        # name the operator did not give. Kept: prune never deletes on a guess.
        if ref.digest and ref.repository in by_repo and held(ref.repository, ref.digest):
            keep(text, ref.repository, ref.digest, "a desired LRP runs its digest by another name")
        else:
            ignored.append((text, why))
    staged = {staging_repository(prefix, s.app_guid, s.staging_guid): s for s in stagings}
    kept: dict[str, str] = {}
    delete: list[tuple[str, str, list[str]]] = []
    emptied: list[StagingRow] = []
    for state in states:
        s = staged.get(state.name)
        if s is None:
            kept[state.name] = "no staging record: not made by this broker"
            continue
        if s.state in OPEN_STATES:
            kept[state.name] = "staging still open"
            continue
        if now - s.created_at < grace:
            kept[state.name] = "younger than the grace period"
            continue
        tops = sorted(set(state.tags.values()))
        kept_here = {d for d in tops if (state.name, d) in keep_digests}
        if not kept_here:
            emptied.append(s)  # every tagged manifest goes (or there was none)
        images = {d: why.split(": ", 1)[-1] for r, d, why in kept_images if r == state.name}
        # What hangs on a kept manifest and on each platform manifest of a kept index
        # (the copy brings every copied manifest's referrers; cosign signs them all).
        roots = {d: images.get(d, d) for d in kept_here}
        for top in kept_here:
            for child in state.children.get(top, []):
                roots.setdefault(child, roots[top])
        for digest, why in _attached(state, roots).items():
            kept_here.add(digest)
            kept_images.add((state.name, digest, why))
        still_needed = {c for d in kept_here for c in state.children.get(d, [])}
        for digest in tops:
            if digest in kept_here:
                continue
            tags = sorted(t for t, d in state.tags.items() if d == digest)
            delete.append((state.name, digest, tags))
            # An index's platform manifests go too (by digest): Distribution 2.8's
            # garbage-collect --delete-untagged would also delete the ones a kept index
            # still needs (distribution#3004), so the procedure runs without it.
            for child in state.children.get(digest, []):
                if child not in still_needed and child not in tops:
                    delete.append((state.name, child, []))
    doomed = {(repo, digest) for repo, digest, _ in delete}
    kept_blobs: set[str] = set()
    gone_blobs: dict[str, int] = {}
    for state in states:
        for digest, sizes in state.blobs.items():
            if (state.name, digest) in doomed:
                gone_blobs.update(sizes)
            else:
                kept_blobs.update(sizes)
    freed = sum(size for blob, size in gone_blobs.items() if blob not in kept_blobs)
    # A repository the catalog does not list is gone only if the catalog is this broker's
    # registry at all: one holding none of its stagings' repositories (another registry,
    # empty storage) proves nothing.
    absent = (
        [s for name, s in staged.items() if name not in by_repo]
        if set(by_repo) & set(staged)
        else []
    )
    gone = sorted(
        s.staging_guid
        for s in [*emptied, *absent]
        if s.state not in OPEN_STATES
        and s.closed_at is not None
        and now - s.closed_at >= SETTLED
        and s.repository_gone_at is None
    )
    return Plan(delete, kept, sorted(kept_images), sorted(ignored), freed, gone)
