"""Signatures, attestations and SBOMs that travel with an image: OCI 1.1 referrers and
cosign's tags, found at the source and made discoverable at the destination.

Found, for each digest a copy takes (and, to a bounded depth, for each referrer found):
- the manifests whose ``subject`` is that digest: listed by the Referrers API
  (``GET /v2/NAME/referrers/DIGEST``) where the source answers it with an OCI index, else
  by the index under the referrers tag schema's tag ``sha256-HEX``, which OCI 1.1 clients
  write to a registry without the API; each listed manifest is fetched by digest and kept
  only when its ``subject`` really is that digest;
- cosign's tags ``sha256-HEX.sig``, ``.att`` and ``.sbom``, where they exist.

A tag is asked for with ``HEAD`` first and fetched only when it is there: Docker Hub counts
a manifest GET against its pull limit, a HEAD not; an image without referrers costs the
Referrers API's GET and four HEADs. A copy finds at most ``MAX_REFERRERS`` referrers, of
``MAX_REFERRER_BYTES`` in all (they are held in memory before any blob moves), and a subject
may list at most ``MAX_PER_SUBJECT``; more fails the copy.

The copy (tailor.copy) copies them as it copies an image. A destination that did not
process a referrer's ``subject`` (no ``OCI-Subject`` header on its PUT, and no Referrers
API) gets the referrers tag index written, merged with what it already lists, less the
entries whose manifest the destination no longer holds.

Not-found at the source means none (an absent tag or API, a stale listing, a manifest this
copy cannot read); anything else that fails there, and any failure writing at the
destination, is the copy's error: an image must not lose its signatures without a word.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tailor.errors import ManifestError, NotFound, TailorError
from tailor.manifest import OCI_INDEX, Manifest, parse_manifest
from tailor.registry import Repository

__all__ = [
    "COSIGN_SUFFIXES",
    "MAX_PER_SUBJECT",
    "MAX_REFERRERS",
    "MAX_REFERRER_BYTES",
    "Finder",
    "Referrer",
    "cosign_tags",
    "descriptor_of",
    "fallback_tag",
    "merged_index",
    "publish",
    "subject_of",
]

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
MAX_DEPTH = 3
"""Referrers of referrers: a signature of an attestation of the image is depth 2."""
MAX_PER_SUBJECT = 1000
"""Referrers one digest may list (the Referrers API is read no further once it lists more)."""
MAX_REFERRERS = 1000
"""Referrers (and cosign tags) one copy may find, in all, at every depth."""
MAX_REFERRER_BYTES = 64 * 1024 * 1024
"""The sum of the sizes of the manifests of those referrers, held in memory together."""
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NOT_TAG = re.compile(r"[^a-zA-Z0-9_.-]")

Lookup = tuple[str, str | None]
"""One lookup for a subject: its listed referrers (None), or one of cosign's tags for it."""
Mapper = Callable[
    [Callable[[Lookup], list["Referrer"]], Iterable[Lookup]], Iterator[list["Referrer"]]
]


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``ALG-HEX``, the algorithm cut to 32
    characters and the encoded part to 64, what a tag may not hold replaced by ``-``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{_NOT_TAG.sub('-', algorithm[:32])}-{_NOT_TAG.sub('-', encoded[:64])}"


def cosign_tags(digest: str) -> list[str]:
    """cosign's tags for the signatures, attestations and SBOMs of ``digest``."""
    return [fallback_tag(digest) + suffix for suffix in COSIGN_SUFFIXES]


def _body(manifest: Manifest) -> dict[str, Any]:
    data = json.loads(manifest.raw)  # parse_manifest read it as a JSON object already
    assert isinstance(data, dict)
    return data


def subject_of(manifest: Manifest) -> str | None:
    """The digest a manifest's ``subject`` names, if it has one."""
    subject = _body(manifest).get("subject")
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


def descriptor_of(manifest: Manifest) -> dict[str, Any]:
    """A referrers index entry, as the distribution spec has a client write one: the
    manifest's ``artifactType`` (an image manifest without one: its config's media type),
    and its annotations."""
    data = _body(manifest)
    desc: dict[str, Any] = {
        "mediaType": manifest.media_type,
        "digest": manifest.digest,
        "size": len(manifest.raw),
    }
    artifact = data.get("artifactType")
    if isinstance(artifact, str) and artifact:
        desc["artifactType"] = artifact
    elif manifest.config is not None:
        desc["artifactType"] = manifest.config.media_type
    annotations = data.get("annotations")
    if isinstance(annotations, dict) and annotations:
        desc["annotations"] = annotations
    return desc


def merged_index(
    existing: bytes | None,
    additions: Sequence[dict[str, Any]],
    held: Callable[[str], bool] = lambda digest: True,
) -> bytes | None:
    """The referrers index ``existing`` (None: an empty one) with the ``additions`` it does
    not list yet (by digest) appended, its own entries and fields kept as they are, except
    the entries whose digest ``held`` says the registry no longer holds (asked only of the
    entries that are no addition); None when that changes nothing (nothing to write)."""
    index: dict[str, Any] = (
        json.loads(existing)
        if existing is not None
        else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    ours = {desc["digest"] for desc in additions}
    entries = []
    changed = False
    for entry in index.get("manifests") or []:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        # By digest only: a string without an algorithm would be asked about as a tag.
        if isinstance(digest, str) and ":" in digest and digest not in ours and not held(digest):
            changed = True  # a stale entry dropped: the index changes
            continue
        entries.append(entry)
    listed = {entry.get("digest") for entry in entries if isinstance(entry, dict)}
    for desc in additions:
        if desc["digest"] not in listed:
            entries.append(desc)
            listed.add(desc["digest"])
            changed = True
    if not changed:
        return None
    index["manifests"] = entries
    return json.dumps(index, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Referrer:
    """A manifest that travels with ``subject``: listed as its referrer (``tag`` None), or
    under one of cosign's tags for it."""

    subject: str
    manifest: Manifest
    tag: str | None = None


class Finder:
    """Finds the referrers of digests at a source; ``mapper`` runs the per-digest lookups
    (``map``, or a thread pool's). The limits are the module's unless given (a test's)."""

    def __init__(
        self,
        src: Repository,
        mapper: Mapper = map,
        *,
        max_per_subject: int = MAX_PER_SUBJECT,
        max_referrers: int = MAX_REFERRERS,
        max_bytes: int = MAX_REFERRER_BYTES,
    ) -> None:
        self.src = src
        self.mapper = mapper
        self.max_per_subject = max_per_subject
        self.max_referrers = max_referrers
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._count = 0
        self._bytes = 0

    def find(self, subjects: Sequence[str]) -> list[Referrer]:
        """The referrers of ``subjects``, and theirs (to MAX_DEPTH), parents first."""
        found: list[Referrer] = []
        seen = set(subjects)
        kept: set[tuple[str, str | None]] = set()
        level = list(subjects)
        for _ in range(MAX_DEPTH):
            following: list[str] = []
            # A subject's lookups (its listing, each cosign tag) are independent requests:
            # they run side by side, and come back in this order whatever finishes first.
            lookups = [(s, tag) for s in level for tag in (None, *cosign_tags(s))]
            for group in self.mapper(self._lookup, lookups):
                for ref in group:
                    key = (ref.manifest.digest, ref.tag)
                    if key in kept or ref.manifest.digest in subjects:
                        continue
                    kept.add(key)
                    found.append(ref)
                    if ref.manifest.digest not in seen:
                        seen.add(ref.manifest.digest)
                        following.append(ref.manifest.digest)
            if not following:
                break
            level = following
        return found

    def _lookup(self, lookup: Lookup) -> list[Referrer]:
        subject, tag = lookup
        if tag is not None:
            self._check()
            manifest = self._get_tag(tag)
            if manifest is None:
                return []
            self._hold(manifest)
            return [Referrer(subject, manifest, tag)]
        out: list[Referrer] = []
        for digest in self._listed(subject):
            self._check()
            manifest = self._get(digest)
            # A listing is anyone's word (a tag any client writes): keep only what says so.
            if manifest is not None and subject_of(manifest) == subject:
                self._hold(manifest)
                out.append(Referrer(subject, manifest))
        return out

    def _hold(self, manifest: Manifest) -> None:
        """Count a referrer found against the copy's limits (lookups run in parallel)."""
        with self._lock:
            self._count += 1
            self._bytes += len(manifest.raw)
        self._check()

    def _check(self) -> None:
        with self._lock:
            count, size = self._count, self._bytes
        if count > self.max_referrers:
            raise ManifestError(
                f"{self.src}: more than {self.max_referrers} referrers in all for this copy "
                "(copy it with --no-referrers)"
            )
        if size > self.max_bytes:
            raise ManifestError(
                f"{self.src}: more than {_mib(self.max_bytes)} of referrer manifests in all "
                "for this copy (copy it with --no-referrers)"
            )

    def _listed(self, subject: str) -> list[str]:
        """The digests listed as referrers of ``subject``: by the API, else the tag."""
        entries = self.src.referrers(subject, limit=self.max_per_subject)
        if entries is None:
            index = self._get_tag(fallback_tag(subject))
            if index is None or index.media_type != OCI_INDEX:
                return []  # no index there: no referrers (the distribution spec's reading)
            entries = list(_body(index).get("manifests") or [])
        digests: list[str] = []
        for entry in entries:
            digest = entry.get("digest") if isinstance(entry, dict) else None
            if isinstance(digest, str) and _DIGEST.match(digest) and digest not in digests:
                digests.append(digest)
        if len(digests) > self.max_per_subject:
            raise ManifestError(
                f"{self.src}@{subject} has more than {self.max_per_subject} referrers "
                "(copy it with --no-referrers)"
            )
        return digests

    def _get_tag(self, tag: str) -> Manifest | None:
        """The manifest under ``tag``: HEAD first, GET only when it is there."""
        return self._get(tag) if self.src.has_manifest(tag) else None

    def _get(self, identifier: str) -> Manifest | None:
        """The manifest, or None when it is not there or is nothing this copy can read (a
        withdrawn 1.1-rc artifact manifest, schema 1): that is no referrer to copy."""
        try:
            return self.src.get_manifest(identifier)
        except (NotFound, ManifestError):
            return None


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size % (1024 * 1024) == 0 else f"{size} bytes"


def publish(dst: Repository, subject: str, referrers: Sequence[Manifest]) -> bool:
    """Make ``referrers`` (pushed already) discoverable as referrers of ``subject`` at a
    destination that did not process their ``subject``: unless it has the Referrers API,
    merge them into the index under its referrers tag, dropping the entries whose manifest
    it no longer holds (it would refuse the index: Distribution 2.8.2 answers 400). True
    when that tag was written."""
    if dst.referrers(subject) is not None:
        return False
    tag = fallback_tag(subject)
    try:
        existing: Manifest | None = dst.get_manifest(tag)
    except NotFound:
        existing = None
    if existing is not None and existing.media_type != OCI_INDEX:
        raise ManifestError(
            f"{dst}:{tag} holds a {existing.media_type}, not the OCI index of the referrers "
            f"of {subject}: not overwritten"
        )

    def held(digest: str) -> bool:
        # Only a 404 drops an entry: on any other failure it stays (nothing lost on a blip).
        try:
            return dst.has_manifest(digest)
        except TailorError:
            return True

    additions = [descriptor_of(m) for m in referrers]
    merged = merged_index(existing.raw if existing else None, additions, held)
    if merged is None:
        return False
    dst.put_manifest(tag, parse_manifest(merged, OCI_INDEX))
    return True
