"""RFC 6962 Merkle tree math (broker/audit/merkle.py): known-answer vectors, proofs against
the RFC's own recursive definitions, tampering, the Go checksum database as a peer, and the
streaming root."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Appender,
    ProofError,
    RootBuilder,
    consistency_proof,
    hashes_to_store,
    inclusion_proof,
    leaf_hash,
    node_hash,
    stored_count,
    stored_index,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.support.gotlog import GoTlog

# Known-answer vectors from transparency-dev/merkle's testdata (Apache-2.0; see the
# README and LICENSE beside them), kept in the repository so a clean clone has them.
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc6962"
LARGEST = 1025  # the biggest tree built here
SMALL = 70  # every pair of sizes up to this one is checked


# -- the RFC's definitions, written out as recursion (the reference) ----------------------------


def _k(n: int) -> int:
    """The largest power of two strictly below n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 2.1: MTH(D[n]) over leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1: PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 2.1.2: SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 2.1.2: PROOF(m, D[n]) for 0 < m < n; empty otherwise."""
    return subproof(m, leaves, True) if 0 < m < len(leaves) else []


def path_shape(m: int, n: int) -> tuple[bool, ...]:
    """For PATH(m, D[n]), whether each proof hash is a right sibling, in proof order: what
    the verifier's computation depends on besides the hashes."""
    if n <= 1:
        return ()
    k = _k(n)
    if m < k:
        return (*path_shape(m, k), True)
    return (*path_shape(m - k, n - k), False)


def proof_shape(m: int, n: int, whole: bool = True) -> tuple[object, ...]:
    """The same for SUBPROOF: the terminal hash (if any), then each side, in proof order."""
    if m == n:
        return () if whole else ("terminal",)
    k = _k(n)
    if m <= k:
        return (*proof_shape(m, k, whole), True)
    return (*proof_shape(m - k, n - k, False), False)


# -- a stored tree ------------------------------------------------------------------------------


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(b"leaf %d" % i) for i in range(n)]


LEAVES = leaves_of(LARGEST)


@functools.cache
def stored() -> tuple[bytes, ...]:
    """The stored-hash sequence of the LARGEST-leaf tree, written through an Appender (each
    tree of fewer leaves stores a prefix of it)."""
    appender = Appender()
    out: list[bytes] = []
    for leaf in LEAVES:
        out.extend(appender.append(leaf))
    return tuple(out)


class Store:
    """The stored hashes of a tree of ``size`` leaves, counting reads; refuses an index the
    tree does not store (yet)."""

    def __init__(self, hashes: Sequence[bytes], size: int) -> None:
        self.hashes = hashes
        self.size = size
        self.calls: list[list[int]] = []

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(list(indexes))
        limit = stored_count(self.size)
        assert all(0 <= i < limit for i in indexes), f"{indexes} beyond {limit} stored"
        return [self.hashes[i] for i in indexes]

    def one_small_read(self) -> None:
        """At most one call to the reader, for O(log size) indexes."""
        assert len(self.calls) <= 1, self.calls
        bound = 2 * max(1, self.size.bit_length())
        assert all(len(c) <= bound for c in self.calls), self.calls


# -- 1. known-answer vectors --------------------------------------------------------------------


def _cases(kind: str) -> list[Any]:
    folder = VECTORS / kind
    files = sorted(folder.glob("*/*.json")) if folder.is_dir() else []
    if not files:  # a test that fails, not an empty (skipped) parametrization
        return [pytest.param(None, id=f"{kind}-vectors-missing")]
    return [pytest.param(f, id=f"{kind}/{f.parent.name}/{f.stem}") for f in files]


def _load(case: Path | None) -> dict[str, Any]:
    if case is None:
        pytest.fail(f"the RFC 6962 vectors are missing: expected them under {VECTORS}")
    data: dict[str, Any] = json.loads(case.read_text())
    return data


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _u64(value: int) -> int:
    """An index as Go reads it: a negative one wraps around (unsigned 64-bit)."""
    return value % 2**64


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vectors(case: Path | None) -> None:
    data = _load(case)
    args = (
        _u64(data["leafIdx"]),
        _u64(data["treeSize"]),
        _b64(data["leafHash"]),
        [_b64(p) for p in data["proof"] or []],
        _b64(data["root"]),
    )
    if data["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vectors(case: Path | None) -> None:
    data = _load(case)
    args = (
        _u64(data["size1"]),
        _u64(data["size2"]),
        _b64(data["root1"]),
        _b64(data["root2"]),
        [_b64(p) for p in data["proof"] or []],
    )
    if data["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_the_vector_folders_are_all_there() -> None:
    for kind in ("inclusion", "consistency"):
        folders = {p.name for p in (VECTORS / kind).iterdir()} if VECTORS.is_dir() else set()
        assert {"0", "1", "2", "3", "4"} <= folders, f"{VECTORS / kind}: {sorted(folders)}"
    assert (VECTORS / "inclusion" / "single-entry").is_dir()


# -- 2. layout, roots and proofs against the reference -----------------------------------------


def test_hashes_and_constants() -> None:
    assert HASH_SIZE == 32
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # RFC 6962's empty-leaf hash, as in the known-answer vectors.
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_stored_layout_small() -> None:
    """Leaves 0, 1, their parent, leaves 2, 3, their parent, the parent of four, leaf 4..."""
    order = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0), (0, 4), (0, 5), (1, 2)]
    assert [stored_index(level, n) for level, n in order] == list(range(len(order)))
    assert [stored_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]
    for bad in ((-1, 0), (0, -1)):
        with pytest.raises(ValueError):
            stored_index(*bad)
    with pytest.raises(ValueError):
        stored_count(-1)


def test_stored_sequence_is_every_complete_subtree_once() -> None:
    hashes = stored()
    assert len(hashes) == stored_count(LARGEST)
    seen = set()
    for level in range(LARGEST.bit_length()):
        width = 1 << level
        for n in range(LARGEST // width):
            i = stored_index(level, n)
            assert hashes[i] == mth(LEAVES[n * width : (n + 1) * width]), (level, n)
            # It is written when its last leaf is, within that leaf's batch.
            last = (n + 1) * width - 1
            assert stored_count(last) <= i < stored_count(last + 1)
            seen.add(i)
    assert seen == set(range(len(hashes)))


def test_hashes_to_store_writes_the_same_sequence() -> None:
    written: list[bytes] = []
    for index, leaf in enumerate(LEAVES):
        store = Store(written, index)
        new = hashes_to_store(index, leaf, store.read)
        assert len(written) == stored_count(index)
        assert len(new) == stored_count(index + 1) - stored_count(index)
        assert len(store.calls) == (1 if index & 1 else 0)
        written.extend(new)
    assert tuple(written) == stored()
    with pytest.raises(ValueError):
        hashes_to_store(-1, LEAVES[0], Store(written, 0).read)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 100, 511, 512, 1000])
def test_appender_resumes_a_stored_tree(size: int) -> None:
    """Appender.at reads the right edge once and goes on as if it had written it all."""
    hashes = stored()
    store = Store(hashes, size)
    appender = Appender.at(size, store.read)
    assert len(store.calls) == (1 if size else 0)
    assert all(len(c) == size.bit_count() for c in store.calls)
    assert appender.size == size and appender.root() == mth(LEAVES[:size])
    written = list(hashes[: stored_count(size)])
    for leaf in LEAVES[size : size + 25]:
        written.extend(appender.append(leaf))
        assert appender.root() == mth(LEAVES[: appender.size])
    assert tuple(written) == hashes[: len(written)]
    with pytest.raises(ValueError):
        Appender.at(-1, store.read)


def _sizes() -> list[int]:
    return [*range(SMALL + 1), 127, 128, 129, 1000, LARGEST]


def _indexes(size: int) -> list[int]:
    """Every index of a small tree; a sample (edges included) of a larger one."""
    if size <= SMALL:
        return list(range(size))
    picks = {0, 1, size // 2, size - 2, size - 1, *random.Random(size).sample(range(size), 40)}
    return sorted(picks)


@pytest.mark.parametrize("size", _sizes())
def test_tree_hash(size: int) -> None:
    store = Store(stored(), size)
    assert tree_hash(size, store.read) == mth(LEAVES[:size])
    store.one_small_read()


@pytest.mark.parametrize("size", _sizes())
def test_inclusion_proofs_are_the_rfc_path(size: int) -> None:
    leaves = LEAVES[:size]
    root = mth(leaves)
    for index in _indexes(size):
        store = Store(stored(), size)
        got = inclusion_proof(index, size, store.read)
        store.one_small_read()
        assert got == path(index, leaves), (index, size)
        verify_inclusion(index, size, leaves[index], got, root)
    for bad in ((size, size), (-1, size), (0, -1)):
        with pytest.raises(ValueError):
            inclusion_proof(*bad, Store(stored(), size).read)


@pytest.mark.parametrize("size", _sizes())
def test_consistency_proofs_are_the_rfc_proof(size: int) -> None:
    leaves = LEAVES[:size]
    root = mth(leaves)
    olds = list(range(size + 1)) if size <= SMALL else [*_indexes(size), size]
    for old in olds:
        store = Store(stored(), size)
        got = consistency_proof(old, size, store.read)
        store.one_small_read()
        assert got == proof(old, leaves), (old, size)
        verify_consistency(old, size, mth(leaves[:old]), root, got)
    for bad in ((size + 1, size), (-1, size), (0, -1)):
        with pytest.raises(ValueError):
            consistency_proof(*bad, Store(stored(), size).read)


def test_no_read_when_nothing_is_needed() -> None:
    def refuse(indexes: Sequence[int]) -> list[bytes]:
        raise AssertionError(f"read {indexes}")

    assert tree_hash(0, refuse) == EMPTY_ROOT
    assert inclusion_proof(0, 1, refuse) == []
    assert consistency_proof(0, 9, refuse) == consistency_proof(9, 9, refuse) == []
    assert hashes_to_store(6, LEAVES[6], refuse) == [LEAVES[6]]
    assert Appender.at(0, refuse).root() == EMPTY_ROOT


def test_a_reader_answering_short_is_an_error() -> None:
    with pytest.raises(ValueError, match="reader"):
        tree_hash(3, lambda indexes: [])
    with pytest.raises(ValueError, match="reader"):
        Appender.at(3, lambda indexes: [])


def test_a_leaf_hash_to_store_must_be_a_hash() -> None:
    """What is stored is checked: a leaf that is not 32 bytes would corrupt the tree."""
    with pytest.raises(ValueError, match="32 bytes"):
        Appender().append(b"leaf 0")
    with pytest.raises(ValueError, match="32 bytes"):
        hashes_to_store(0, b"", lambda indexes: [])


def test_consistency_conventions() -> None:
    """Same size: empty proof, equal roots. From 0: empty proof, the empty tree's root."""
    root5 = mth(LEAVES[:5])
    verify_consistency(5, 5, root5, root5, [])
    verify_consistency(0, 5, EMPTY_ROOT, root5, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    refused = [
        (5, 5, root5, mth(LEAVES[:6]), []),  # same size, other root
        (5, 5, root5, root5, [root5]),  # same size, a proof
        (0, 5, EMPTY_ROOT, root5, [root5]),  # from empty, a proof
        (0, 5, root5, root5, []),  # from empty, not the empty root
        (6, 5, root5, root5, []),  # shrinking
        (-1, 5, root5, root5, []),
        (3, 5, mth(LEAVES[:3]), root5, []),  # a real step with no proof
    ]
    for args in refused:
        with pytest.raises(ProofError):
            verify_consistency(*args)


# -- 3. tampering -------------------------------------------------------------------------------

TAMPER_SIZES = [1, 2, 3, 4, 5, 7, 8, 13, 16, 21]


def _mutations(good: list[bytes]) -> list[list[bytes]]:
    """Every byte of every hash flipped; each hash dropped; a hash inserted anywhere; each hash
    duplicated; a short and a long hash."""
    out: list[list[bytes]] = []
    for i, h in enumerate(good):
        for b in range(HASH_SIZE):
            flipped = bytearray(h)
            flipped[b] ^= 0x01
            out.append([*good[:i], bytes(flipped), *good[i + 1 :]])
        out.append(good[:i] + good[i + 1 :])
        out.append([*good[: i + 1], h, *good[i + 1 :]])
        out.append([*good[:i], h[:-1], *good[i + 1 :]])
        out.append([*good[:i], h + b"\x00", *good[i + 1 :]])
    for i in range(len(good) + 1):
        out.append([*good[:i], LEAVES[-1], *good[i:]])
    return out


@pytest.mark.parametrize("size", TAMPER_SIZES)
def test_tampered_inclusion_proofs_are_refused(size: int) -> None:
    leaves = LEAVES[:size]
    root = mth(leaves)
    for index in range(size):
        good = path(index, leaves)
        for bad in _mutations(good):
            with pytest.raises(ProofError):
                verify_inclusion(index, size, leaves[index], bad, root)
        wrong_roots = [mth(leaves[:-1]), mth(LEAVES[: size + 1]), EMPTY_ROOT, root[:-1]]
        for wrong in wrong_roots:
            with pytest.raises(ProofError):
                verify_inclusion(index, size, leaves[index], good, wrong)
        for wrong_leaf in (LEAVES[size], leaves[index][::-1], leaves[index][:-1], b""):
            with pytest.raises(ProofError):
                verify_inclusion(index, size, wrong_leaf, good, root)
        # Another position: refused unless the verifier's computation is the very same (same
        # proof length and sides), which only a different size can give (index 0 of 5 and of
        # 6 hash alike: the root, signed with its size, tells them apart).
        for other_size in range(0, 2 * size + 3):
            for other in [*range(other_size + 2), 2**64 - 1]:
                if (other, other_size) == (index, size):
                    continue
                same = other < other_size and path_shape(other, other_size) == path_shape(
                    index, size
                )
                assert not (same and other_size == size)
                if same:
                    verify_inclusion(other, other_size, leaves[index], good, root)
                else:
                    with pytest.raises(ProofError):
                        verify_inclusion(other, other_size, leaves[index], good, root)


@pytest.mark.parametrize("size", TAMPER_SIZES)
def test_tampered_consistency_proofs_are_refused(size: int) -> None:
    leaves = LEAVES[:size]
    root = mth(leaves)
    for old in range(1, size):
        old_root = mth(leaves[:old])
        good = proof(old, leaves)
        for bad in _mutations(good):
            with pytest.raises(ProofError):
                verify_consistency(old, size, old_root, root, bad)
        swaps = [(root, old_root), (old_root, old_root), (root, root), (EMPTY_ROOT, root)]
        swaps += [(mth(leaves[: old - 1]), root), (old_root, mth(LEAVES[: size + 1]))]
        swaps += [(old_root, EMPTY_ROOT), (old_root[:-1], root), (old_root, root + b"\x00")]
        for r1, r2 in swaps:
            with pytest.raises(ProofError):
                verify_consistency(old, size, r1, r2, good)
        # Other sizes: refused unless the proof has the very same shape for them.
        for other_old in range(0, 2 * size + 2):
            for other_size in range(0, 2 * size + 2):
                if (other_old, other_size) == (old, size):
                    continue
                same = 0 < other_old < other_size and proof_shape(
                    other_old, other_size
                ) == proof_shape(old, size)
                if same:
                    verify_consistency(other_old, other_size, old_root, root, good)
                else:
                    with pytest.raises(ProofError):
                        verify_consistency(other_old, other_size, old_root, root, good)


# -- 4. the Go checksum database as a peer ------------------------------------------------------

GO_SIZE = 300


def _go_pairs(seed: int, count: int, lowest: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pairs = {(lowest, 1), (lowest, GO_SIZE), (GO_SIZE - 1, GO_SIZE), (128, 256), (255, 256)}
    while len(pairs) < count:
        size = rng.randint(1, GO_SIZE)
        pairs.add((rng.randint(lowest, size - 1 if lowest == 0 else size), size))
    return sorted(pairs)


def test_go_accepts_our_inclusion_proofs(go_tlog: GoTlog) -> None:
    for index, size in _go_pairs(seed=1, count=300, lowest=0):
        store = Store(stored(), size)
        root = tree_hash(size, store.read)
        got = inclusion_proof(index, size, store.read)
        assert go_tlog.inclusion_error(index, size, root, LEAVES[index], got) is None, (
            index,
            size,
        )


def test_go_accepts_our_consistency_proofs(go_tlog: GoTlog) -> None:
    for old, size in _go_pairs(seed=2, count=300, lowest=1):
        store = Store(stored(), size)
        old_root, root = tree_hash(old, store.read), tree_hash(size, store.read)
        got = consistency_proof(old, size, store.read)
        assert go_tlog.consistency_error(old, size, old_root, root, got) is None, (old, size)


def test_go_agrees_on_leaf_hashes(go_tlog: GoTlog) -> None:
    for data in (b"", b"leaf 0", bytes(range(256)), b"\x00" * 1000):
        assert go_tlog.record_hash(data) == leaf_hash(data)


def test_go_refuses_tampered_proofs(go_tlog: GoTlog) -> None:
    size = 277
    store = Store(stored(), size)
    root = tree_hash(size, store.read)
    good = inclusion_proof(100, size, Store(stored(), size).read)
    assert go_tlog.inclusion_error(100, size, root, LEAVES[100], good) is None
    for bad in ([good[0][:-1] + b"\xff", *good[1:]], good[:-1], [*good, good[-1]]):
        assert go_tlog.inclusion_error(100, size, root, LEAVES[100], bad) is not None
        with pytest.raises(ProofError):
            verify_inclusion(100, size, LEAVES[100], bad, root)
    old_root = mth(LEAVES[:100])
    good = consistency_proof(100, size, Store(stored(), size).read)
    assert go_tlog.consistency_error(100, size, old_root, root, good) is None
    for bad in ([*good[:-1], good[-1][::-1]], good[1:], [*good, good[0]]):
        assert go_tlog.consistency_error(100, size, old_root, root, bad) is not None
        with pytest.raises(ProofError):
            verify_consistency(100, size, old_root, root, bad)
    # Where the conventions differ: Go's tlog refuses a proof from the empty tree outright.
    assert go_tlog.consistency_error(0, size, EMPTY_ROOT, root, []) is not None
    verify_consistency(0, size, EMPTY_ROOT, root, [])


# -- 5. the streaming root ----------------------------------------------------------------------


def test_root_builder_matches_tree_hash_at_every_size() -> None:
    builder = RootBuilder()
    assert builder.size == 0 and builder.root() == EMPTY_ROOT
    for size in range(1, 301):
        builder.add(LEAVES[size - 1])
        assert builder.size == size
        assert builder.root() == tree_hash(size, Store(stored(), size).read), size
        assert builder.root() == builder.root()  # asking does not consume it
    bulk = RootBuilder()
    bulk.extend(LEAVES[:137])
    assert bulk.root() == mth(LEAVES[:137])
    bulk.extend(iter(LEAVES[137:300]))
    assert bulk.size == 300 and bulk.root() == builder.root()
