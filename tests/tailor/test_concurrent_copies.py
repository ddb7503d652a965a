"""Concurrent copies of one image into one registry, sharing the blob record: each blob
comes from upstream once (the claims of tailor.blobcache), against real registries."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailor import blobcache
from tailor.authn import ANONYMOUS, Basic
from tailor.blobcache import MemoryLocations, SqliteLocations
from tailor.copy import CopyOptions, CopyResult, copy_image
from tailor.registry import Repository
from tailor.transport import InsecureHosts, Transport
from tests.support.concurrency import together
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.images import Layout, image
from tests.support.proxy import Proxy
from tests.support.registry import Registry
from tests.support.skopeo import Skopeo
from tests.support.tokenserver import TokenRegistry


@pytest.fixture
def source(public: Registry, skopeo: Skopeo, tmp_path: Path) -> Iterator[Proxy]:
    """A public registry holding a three-layer image, behind a proxy that counts blob GETs
    and holds each blob's answer back a little, so concurrent downloads overlap."""
    layout = Layout(tmp_path / "layout")
    layout.tag("v1", image(layout, seed=7, layers=3, layer_size=256 * 1024))
    skopeo.push(layout, "v1", f"{public.host}/team/app:v1", all_platforms=False)
    proxy = Proxy(public.host)
    proxy.faults.slow_blobs = 0.5
    yield proxy
    proxy.stop()


def _copy(proxy: Proxy, internal: Registry, repo: str, record: Path) -> CopyResult:
    insecure = InsecureHosts([proxy.host, internal.host])
    src = Repository(Transport(proxy.host, ANONYMOUS, insecure), "team/app")
    dst = Repository(Transport(internal.host, ANONYMOUS, insecure), repo, push=True)
    # A record of its own per copy, on one file: as separate processes of one user.
    options = CopyOptions(locations=SqliteLocations(record), referrers=False)
    return copy_image(src, "v1", dst, "v1", options)


def test_concurrent_copies_fetch_each_blob_once(
    source: Proxy, internal: Registry, tmp_path: Path
) -> None:
    repos = [f"staging/app/s{i}" for i in range(3)]
    record = tmp_path / "record.sqlite"
    results = together([functools.partial(_copy, source, internal, r, record) for r in repos])
    blobs = 4  # the config and three layers
    # Without the claims all three start on the same blobs and each downloads all four.
    assert sorted(source.blob_gets.values()) == [1] * blobs, source.blob_gets
    assert sum(r.stats.blobs_copied for r in results) == blobs
    assert sum(r.stats.blobs_mounted for r in results) == 2 * blobs
    assert len({r.digest for r in results}) == 1
    for repo in repos:
        check = Repository(
            Transport(internal.host, ANONYMOUS, InsecureHosts([internal.host])), repo
        )
        assert check.has_manifest(results[0].digest)
        for desc in check.get_manifest(results[0].digest).blobs():
            assert check.has_blob(desc.digest)


def test_a_claim_left_by_a_dead_copy_holds_nobody_back(
    source: Proxy, internal: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy that was killed mid-download leaves its claims; once they are stale, the
    # next copy downloads the blobs itself.
    monkeypatch.setattr(blobcache, "CLAIM_STALE", 1.0)
    record = tmp_path / "record.sqlite"
    src = Repository(Transport(source.host, ANONYMOUS, InsecureHosts([source.host])), "team/app")
    ghost = SqliteLocations(record)
    for desc in src.get_manifest("v1").blobs():
        assert ghost.claim(internal.host, desc.digest, "staging/app/killed") is None
    start = time.monotonic()
    result = _copy(source, internal, "staging/app/s1", record)
    assert result.stats.blobs_copied == 4
    assert time.monotonic() - start >= 0.9  # it waited for the claims to go stale


def test_no_wait_for_a_claimant_this_copy_may_not_mount_from(
    source: Proxy, token_upstream: TokenRegistry, tmp_path: Path
) -> None:
    # The claimant's repository is one this copy's credentials cannot read (another app's
    # staging, on a registry whose token server says so): its blob could not be mounted
    # from there, so waiting for it would only delay this copy.
    reg, server = token_upstream.registry, token_upstream.server
    server.unreadable = {"staging/other/s9"}
    record = tmp_path / "record.sqlite"
    insecure = InsecureHosts([source.host, reg.host, server.host])
    src = Repository(Transport(source.host, ANONYMOUS, insecure), "team/app")
    ghost = SqliteLocations(record)
    for desc in src.get_manifest("v1").blobs():
        assert ghost.claim(reg.host, desc.digest, "staging/other/s9") is None
    auth = Basic(UPSTREAM_USER, UPSTREAM_PASSWORD)
    dst = Repository(Transport(reg.host, auth, insecure), "staging/app/s1", push=True)
    options = CopyOptions(locations=SqliteLocations(record), referrers=False)
    start = time.monotonic()
    result = copy_image(src, "v1", dst, "v1", options)
    assert result.stats.blobs_copied == 4
    assert time.monotonic() - start < blobcache.CLAIM_STALE / 2  # no wait for the claims


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_claims(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c" / "blob-locations.sqlite"
    one, two = (
        (SqliteLocations(path), SqliteLocations(path))
        if kind == "sqlite"
        else (MemoryLocations(),) * 2
    )
    assert one.claim("r:5000", "sha256:x", "a") is None
    assert two.claim("r:5000", "sha256:x", "b") == "a"  # a holds it
    assert one.claim("r:5000", "sha256:x", "a") is None  # refreshed by its holder
    assert two.claim("other:5000", "sha256:x", "b") is None  # per registry
    two.release("r:5000", "sha256:x", "b")  # not b's: no-op
    assert two.claim("r:5000", "sha256:x", "b") == "a"
    one.release("r:5000", "sha256:x", "a")
    assert two.claim("r:5000", "sha256:x", "b") is None  # released: b takes it
    monkeypatch.setattr(blobcache, "CLAIM_STALE", 0.0)
    time.sleep(0.01)
    assert one.claim("r:5000", "sha256:x", "a") is None  # b's went stale: a takes it
