"""The copy loop: every blob first (in parallel), then child manifests, the top one last.

A blob the destination already has is never downloaded: it is found with HEAD in
the target repository, or mounted from another repository of the same registry
that is known to hold it, and only otherwise streamed GET -> PUT. Because the
top manifest goes last, a copy that fails anywhere publishes no tag.

Before it downloads a blob, a copy claims it in the blob record (tailor.blobcache); a
concurrent copy of the same blob into the same registry that shares the record (another
repository, another process of this user) waits for the claimant, then mounts the blob
from it: concurrent copies of one image fetch each blob from upstream once.

The image's signatures, attestations and SBOMs (its referrers and cosign's tags: see
tailor.referrers) come along unless ``CopyOptions.referrers`` is off: their blobs with the
image's, their manifests after the image's (the top one pushed by digest first, so a
subject is there before what refers to it), the tag last.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tailor.blobcache import BlobLocations, MemoryLocations
from tailor.blobstream import VerifiedBlobStream
from tailor.errors import (
    Denied,
    DigestMismatch,
    ManifestError,
    NotFound,
    PolicyRefused,
    RegistryError,
    TailorError,
    TransportError,
    Unauthorized,
)
from tailor.manifest import Descriptor, Manifest, Platform, parse_manifest
from tailor.progress import Progress, SilentProgress
from tailor.referrers import Finder, Referrer, publish
from tailor.registry import Repository
from tailor.retry import RETRYABLE_STATUS

__all__ = ["CopyOptions", "CopyResult", "CopyStats", "copy_image", "resolve_image"]

_MAX_MOUNT_TRIES = 3
_BLOB_ATTEMPTS = 3
_MAX_DEPTH = 2
_CLAIM_POLL = 0.2
"""Seconds between looks at a blob another copy is downloading into the same registry."""
_CLAIM_REFRESH = 3.0
"""Seconds between refreshes of our claim while its bytes flow (tailor.blobcache)."""


@dataclass
class CopyOptions:
    jobs: int = 4
    platform: Platform | None = None
    locations: BlobLocations = field(default_factory=MemoryLocations)
    progress: Progress = field(default_factory=SilentProgress)
    mount_from: Sequence[str] = ()
    """Repositories of the destination registry worth trying as mount sources first."""
    referrers: bool = True
    """Copy the referrers and cosign tags of every manifest copied (tailor.referrers)."""
    admit: Callable[[Manifest], object] | None = None
    """Asked about every image manifest the copy takes (not an index), before any blob
    moves; what it raises stops the copy with nothing published (the signature policy)."""
    narrow: bool = False
    """An index's platforms ``admit`` refuses are left out (a new index, another digest)
    instead of refusing the copy; refused when none is left."""


@dataclass
class CopyStats:
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_copied: int = 0
    bytes_downloaded: int = 0
    resumes: int = 0
    manifests: int = 0
    referrers: int = 0
    referrer_indexes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class CopyResult:
    digest: str
    reference: str
    manifest: Manifest
    stats: CopyStats
    dropped: tuple[tuple[Descriptor, PolicyRefused], ...] = ()
    """With ``narrow``: the index entries left out, and why."""


def _pick(src: Repository, manifest: Manifest, platform: Platform | None) -> Manifest:
    """With a platform, descend from an index to that platform's image manifest."""
    depth = 0
    while platform and manifest.is_index:
        depth += 1
        if depth > _MAX_DEPTH:
            raise ManifestError("index nesting is too deep")
        manifest = src.get_manifest(manifest.select(platform).digest)
    return manifest


def resolve_image(src: Repository, identifier: str, platform: Platform | None = None) -> Manifest:
    """The manifest ``identifier`` names (narrowed to ``platform`` when given)."""
    return _pick(src, src.get_manifest(identifier), platform)


def _plan(src: Repository, top: Manifest) -> tuple[list[Manifest], list[Descriptor]]:
    """Manifests to push, children before parents, and the distinct blobs they need."""
    manifests: list[Manifest] = []
    blobs: dict[str, Descriptor] = {}

    def visit(manifest: Manifest, depth: int) -> None:
        if manifest.is_index:
            if depth > _MAX_DEPTH:
                raise ManifestError("index nesting is too deep")
            for child in manifest.children:
                visit(src.get_manifest(child.digest), depth + 1)
        else:
            for desc in manifest.blobs():
                blobs.setdefault(desc.digest, desc)
        manifests.append(manifest)

    visit(top, 0)
    return manifests, list(blobs.values())


def _admit(
    top: Manifest, manifests: list[Manifest], options: CopyOptions
) -> tuple[Manifest, list[tuple[Descriptor, PolicyRefused]]]:
    """Ask ``options.admit`` about every image manifest; with ``narrow``, the index less
    the entries refused (byte for byte the same index when none is), and those entries."""
    assert options.admit is not None
    refused: dict[str, PolicyRefused] = {}
    entries = {child.digest for child in top.children}
    for manifest in manifests:
        if manifest.is_index:
            continue
        try:
            options.admit(manifest)
        except PolicyRefused as exc:
            if not options.narrow or manifest.digest not in entries:
                raise  # not an entry of the top index: nothing to leave out
            refused.setdefault(manifest.digest, exc)
    if not refused:
        return top, []
    dropped = [(c, refused[c.digest]) for c in top.children if c.digest in refused]
    if len(dropped) == len(top.children):
        raise dropped[0][1]
    index = json.loads(top.raw)
    index["manifests"] = [e for e in index["manifests"] if e.get("digest") not in refused]
    raw = json.dumps(index, separators=(",", ":")).encode()
    return parse_manifest(raw, top.media_type), dropped


def image_manifests(src: Repository, top: Manifest) -> list[Manifest]:
    """The image manifests under ``top`` (itself, or an index's), as a copy would take them."""
    return [m for m in _plan(src, top)[0] if not m.is_index]


class _BlobCopier:
    def __init__(self, src: Repository, dst: Repository, options: CopyOptions, stats: CopyStats):
        self.src, self.dst, self.options, self.stats = src, dst, options, stats
        self.dst_registry = dst.transport.registry
        self.same_registry = src.transport.registry == self.dst_registry
        self.cancelled = threading.Event()
        self._readable_repos: dict[str, bool] = {}

    def _mount_sources(self, digest: str) -> list[str]:
        seen: list[str] = []
        hints = list(self.options.mount_from)
        if self.same_registry:
            hints.insert(0, self.src.name)
        known = self.options.locations.candidates(self.dst_registry, digest, self.dst.name)
        for repo in [*hints, *known]:
            if repo != self.dst.name and repo not in seen:
                seen.append(repo)
        return seen[:_MAX_MOUNT_TRIES]

    def copy(self, desc: Descriptor) -> None:
        progress = self.options.progress
        progress.start(desc.digest, desc.size)
        how = self._place(desc)
        if how == "copied":
            self.options.locations.record(self.src.transport.registry, desc.digest, self.src.name)
        else:
            self.options.locations.record(self.dst_registry, desc.digest, self.dst.name)
        progress.finish(desc.digest, how)

    def _place(self, desc: Descriptor) -> str:
        if self.dst.has_blob(desc.digest):
            self.stats.add(blobs_present=1)
            return "present"
        locations = self.options.locations
        upload: str | None = None
        while True:
            mounted, upload = self._mount(desc.digest, upload)
            if mounted:
                self.stats.add(blobs_mounted=1)
                return "mounted"
            holder = locations.claim(self.dst_registry, desc.digest, self.dst.name)
            if holder is None or not self._readable(holder, desc.digest):
                break  # ours to download (or the claimant's, where we may not mount from)
            # Another copy is downloading this blob into this registry: mount it from there
            # once it is done, rather than download it a second time.
            self._await(desc.digest, holder)
        try:
            self._upload(desc, upload)
            # Recorded before the claim goes, so a copy waiting on it finds where to mount.
            locations.record(self.dst_registry, desc.digest, self.dst.name)
        finally:
            locations.release(self.dst_registry, desc.digest, self.dst.name)
        self.stats.add(blobs_copied=1)
        return "copied"

    def _mount(self, digest: str, upload: str | None) -> tuple[bool, str | None]:
        """Try the mount sources: (True, None) when one mounted, else (False, the upload
        session a refusing registry opened instead, if any)."""
        for source in self._mount_sources(digest):
            try:
                leftover = self.dst.mount_blob(digest, source)
            except (Unauthorized, Denied, NotFound):
                self.options.locations.forget(self.dst_registry, digest, source)
                continue
            if leftover is None:
                return True, None
            # The registry could not mount and opened a plain upload instead.
            self.options.locations.forget(self.dst_registry, digest, source)
            if upload:
                self.dst.cancel_upload(upload)
            upload = leftover
        return False, upload

    def _readable(self, repository: str, digest: str) -> bool:
        """Whether this copy may read ``repository`` (so mount from it): worth waiting for a
        claim there. A HEAD of the blob answers it (200 or 404: yes; refused: no)."""
        known = self._readable_repos.get(repository)
        if known is None:
            try:
                Repository(self.dst.transport, repository).has_blob(digest)
                known = True
            except TailorError:
                known = False
            self._readable_repos[repository] = known
        return known

    def _await(self, digest: str, holder: str) -> None:
        """Wait while ``holder`` downloads ``digest``: until it recorded the blob, or its
        claim ended (it failed, or went quiet) or passed to us or to another copy."""
        locations = self.options.locations
        while True:
            if self.cancelled.wait(_CLAIM_POLL):
                raise TransportError("copy cancelled")
            if holder in locations.candidates(self.dst_registry, digest, self.dst.name):
                return
            if locations.claim(self.dst_registry, digest, self.dst.name) != holder:
                return

    def _advance(self, digest: str, n: int) -> None:
        if self.cancelled.is_set():
            # Another blob failed: stop streaming this one, the copy is lost anyway.
            raise TransportError("copy cancelled")
        self.options.progress.advance(digest, n)

    def _upload(self, desc: Descriptor, location: str | None) -> None:
        refreshed = time.monotonic()

        def on_bytes(n: int) -> None:
            nonlocal refreshed
            self._advance(desc.digest, n)
            if time.monotonic() - refreshed > _CLAIM_REFRESH:
                # Still downloading: keep the claim, so concurrent copies keep waiting.
                refreshed = time.monotonic()
                self.options.locations.claim(self.dst_registry, desc.digest, self.dst.name)

        for attempt in range(1, _BLOB_ATTEMPTS + 1):
            stream = VerifiedBlobStream(
                lambda offset: self.src.open_blob(desc.digest, offset),
                desc.digest,
                desc.size,
                on_bytes=on_bytes,
            )
            try:
                self.dst.finish_upload(location or self.dst.start_upload(), desc.digest, stream)
                return
            except (TransportError, RegistryError) as exc:
                # The destination broke mid-PUT (a dropped connection, or a proxy's 502 when
                # the replica behind it died): start a fresh upload session after a pause.
                transient = not isinstance(exc, RegistryError) or exc.status in RETRYABLE_STATUS
                if attempt == _BLOB_ATTEMPTS or not transient or self.cancelled.is_set():
                    raise
                self.dst.transport.backoff(attempt)
                location = None
            finally:
                self.stats.add(bytes_downloaded=stream.received, resumes=stream.resumed)


def _push_referrers(
    dst: Repository, followers: list[tuple[Referrer, list[Manifest]]], stats: CopyStats
) -> None:
    """Push the referrers (their blobs are there), parents first; then, for each subject
    whose referrers the destination did not process, merge them into its referrers tag."""
    unprocessed: dict[str, list[Manifest]] = {}
    for ref, ref_manifests in followers:
        for manifest in ref_manifests[:-1]:
            dst.put_manifest(manifest.digest, manifest)
        if ref.tag is not None:
            dst.put_manifest(ref.tag, ref.manifest)
        else:
            _, processed = dst.put_referrer(ref.manifest.digest, ref.manifest)
            if processed != ref.subject:
                unprocessed.setdefault(ref.subject, []).append(ref.manifest)
        stats.add(referrers=1)
    for subject, listed in unprocessed.items():
        if publish(dst, subject, listed):
            stats.add(referrer_indexes=1)


def copy_image(
    src: Repository,
    identifier: str,
    dst: Repository,
    dst_identifier: str | None,
    options: CopyOptions | None = None,
) -> CopyResult:
    """Copy ``src:identifier`` to ``dst``; tag it ``dst_identifier`` (or push by digest)."""
    options = options or CopyOptions()
    stats = CopyStats()
    top = resolve_image(src, identifier, options.platform)
    if dst_identifier and dst_identifier.startswith("sha256:") and dst_identifier != top.digest:
        raise DigestMismatch(
            f"digest mismatch: destination names {dst_identifier}, source is {top.digest}"
        )
    manifests, blobs = _plan(src, top)
    dropped: list[tuple[Descriptor, PolicyRefused]] = []
    if options.admit is not None:
        top, dropped = _admit(top, manifests, options)
        if dropped:
            if dst_identifier and dst_identifier.startswith("sha256:"):
                raise dropped[0][1]  # a digest destination names the whole index
            manifests, blobs = _plan(src, top)
    followers: list[tuple[Referrer, list[Manifest]]] = []
    if options.referrers:
        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as lookups:
            found = Finder(src, lookups.map).find([m.digest for m in manifests])
        needed = {desc.digest: desc for desc in blobs}
        for ref in found:
            ref_manifests, ref_blobs = _plan(src, ref.manifest)
            followers.append((ref, ref_manifests))
            for desc in ref_blobs:
                needed.setdefault(desc.digest, desc)
        blobs = list(needed.values())
    copier = _BlobCopier(src, dst, options, stats)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        # Largest first: the long transfers start at once and the small ones fill the gaps.
        ordered = sorted(blobs, key=lambda d: -d.size)
        futures = [pool.submit(copier.copy, desc) for desc in ordered]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f.exception() for f in futures if f in done and f.exception() is not None]
        if failed:
            copier.cancelled.set()
            for future in pending:
                future.cancel()
            wait(pending)
            first = failed[0]
            assert first is not None
            raise first
    for manifest in manifests[:-1]:
        dst.put_manifest(manifest.digest, manifest)
        stats.add(manifests=1)
    tagged = bool(dst_identifier) and dst_identifier != top.digest
    if followers:
        # The subject first, by digest, whatever the destination names: a referrer's
        # tags (cosign's, the referrers tag) never point at an image not there yet.
        dst.put_manifest(top.digest, top)
        _push_referrers(dst, followers, stats)
    if tagged or not followers:
        dst.put_manifest(dst_identifier or top.digest, top)  # the image's tag last
    stats.add(manifests=1)
    reference = f"{dst}@{top.digest}"
    return CopyResult(top.digest, reference, top, stats, tuple(dropped))
