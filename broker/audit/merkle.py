"""RFC 6962 / RFC 9162 Merkle tree math over a stored-hash layout. Pure: no database, no I/O.

The tree is the one of RFC 9162 section 2.1.1: a leaf's hash is SHA-256(0x00 || data),
an interior node's SHA-256(0x01 || left || right), and a tree of ``n`` leaves splits at
the largest power of two below ``n`` (the left side complete, the right side what is
left). The empty tree's hash is SHA-256 of nothing.

**Stored hashes.** The log keeps the hash of every *complete* subtree (2**level leaves,
aligned on a multiple of 2**level) exactly once, in the order the subtrees complete as
leaves are appended: leaf n's hash, then the hash of each subtree that leaf completes,
smallest first. This is the layout of the Go checksum database (golang.org/x/mod/sumdb/
tlog). A tree of ``size`` leaves stores ``2*size - popcount(size)`` hashes and never
rewrites one, so the store is append-only. Every other hash (the root, the right side of
a tree whose size is not a power of two) is folded from a few stored ones.

**Reading.** Functions that need stored hashes take a :data:`Reader` and call it at most
once, with every index they need (the store answers with one query); a function that
needs none does not call it. The indexes asked for are O(log size).

**Proofs** are RFC 6962 section 2.1.1 PATH (inclusion; the leaf's sibling first, the
root's child last) and section 2.1.2 PROOF/SUBPROOF (consistency), and are checked with
RFC 9162 sections 2.1.3.2 and 2.1.4.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Appender",
    "ProofError",
    "Reader",
    "RootBuilder",
    "consistency_proof",
    "hashes_to_store",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "stored_count",
    "stored_index",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32

Reader = Callable[[Sequence[int]], Sequence[bytes]]
"""Given stored indexes, their hashes in the same order."""

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"

EMPTY_ROOT = _sha256(b"").digest()
"""The hash of the tree of no leaves (RFC 9162 section 2.1.1: MTH({}) = HASH())."""


class ProofError(ValueError):
    """A proof that does not prove what it was checked for."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf holding ``data``: SHA-256(0x00 || data)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node over two child hashes: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


# -- layout ---------------------------------------------------------------------------------


def stored_index(level: int, n: int) -> int:
    """The position in the stored sequence of the hash of subtree ``n`` at ``level``: the
    complete subtree over leaves [n << level, (n + 1) << level).

    That subtree completes when its last leaf, m = ((n + 1) << level) - 1, is appended. The
    hashes stored before leaf m's are those of the complete subtrees of a tree of m leaves,
    ``stored_count(m)``; leaf m's comes next, then the ``level`` parents it completes,
    smallest first. Worked out: ((n + 1) << (level + 1)) - 2 - popcount(n).
    """
    if level < 0 or n < 0:
        raise ValueError(f"no stored hash at level {level}, number {n}: both must be >= 0")
    return ((n + 1) << (level + 1)) - 2 - n.bit_count()


def stored_count(size: int) -> int:
    """How many hashes a tree of ``size`` leaves stores: one per complete subtree, that is
    size + size//2 + size//4 + ... = 2*size - popcount(size)."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return 2 * size - size.bit_count()


def _split(n: int) -> int:
    """The largest power of two below ``n`` (n >= 2): where RFC 6962 splits n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_indexes(lo: int, hi: int, out: list[int]) -> None:
    """Append to ``out`` the stored indexes whose hashes fold into the hash of leaves
    [lo, hi).

    The range must be a node of some RFC 6962 tree: ``lo`` a multiple of a power of two at
    least ``hi - lo`` (every range the proofs below walk through is). It is then the
    complete subtrees of the binary decomposition of ``hi - lo``, largest first.
    """
    width = hi - lo
    while width:
        level = width.bit_length() - 1
        n = lo >> level
        out.append(((n + 1) << (level + 1)) - 2 - n.bit_count())  # stored_index(level, n)
        lo += 1 << level
        width -= 1 << level


def _fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of consecutive complete subtrees, largest first, whose sizes are decreasing
    powers of two: each is the left child of the tree over those after it."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = _sha256(_NODE + h + acc).digest()
    return acc


def _read(read: Reader, wanted: list[int]) -> Sequence[bytes]:
    """``read(wanted)``, checked to answer one hash per index."""
    got = read(wanted)
    if len(got) != len(wanted):
        raise ValueError(f"the reader returned {len(got)} hashes for {len(wanted)} indexes")
    return got


def _check_leaf(leaf: bytes) -> None:
    if len(leaf) != HASH_SIZE:
        raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes, not {len(leaf)}")


def _read_ranges(ranges: Sequence[tuple[int, int]], read: Reader) -> list[bytes]:
    """The hashes of leaf ranges [lo, hi), in order, through one call to ``read``."""
    wanted: list[int] = []
    counts: list[int] = []
    for lo, hi in ranges:
        before = len(wanted)
        _range_indexes(lo, hi, wanted)
        counts.append(len(wanted) - before)
    if not wanted:
        return []
    got = _read(read, wanted)
    out: list[bytes] = []
    at = 0
    for count in counts:
        out.append(got[at] if count == 1 else _fold(got[at : at + count]))
        at += count
    return out


def _edge(size: int) -> list[tuple[int, int]]:
    """The complete subtrees a tree of ``size`` leaves ends with (its right edge), largest
    first, as leaf ranges: one per set bit of ``size``."""
    out: list[tuple[int, int]] = []
    lo = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((lo, lo + (1 << level)))
            lo += 1 << level
    return out


# -- writing --------------------------------------------------------------------------------


def hashes_to_store(index: int, leaf: bytes, read: Reader) -> list[bytes]:
    """The hashes to store when leaf number ``index`` (leaf hash ``leaf``) is appended to a
    tree of ``index`` leaves: ``leaf``, then the subtrees it completes, smallest first. They
    go at positions ``stored_count(index)`` up to ``stored_count(index + 1) - 1``.

    Leaf ``index`` completes one subtree per trailing one bit of ``index``; the left
    sibling of each is read (one call, none when ``index`` is even).
    """
    if index < 0:
        raise ValueError(f"leaf index {index} is negative")
    _check_leaf(leaf)
    levels = (index ^ (index + 1)).bit_length() - 1  # trailing ones of index
    if not levels:
        return [leaf]
    wanted = [stored_index(level, (index >> level) - 1) for level in range(levels)]
    out = [leaf]
    acc = leaf
    for sibling in _read(read, wanted):
        acc = _sha256(_NODE + sibling + acc).digest()
        out.append(acc)
    return out


class _Edge:
    """The right edge of a tree: the hashes of the complete subtrees it ends with, largest
    first (one per set bit of the size). All a tree needs to grow and to give its root."""

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        """How many leaves the tree has."""
        return self._size

    def root(self) -> bytes:
        """The root of the tree so far (:data:`EMPTY_ROOT` for no leaf); O(log size), and
        the tree can go on growing."""
        if not self._stack:
            return EMPTY_ROOT
        return _fold(self._stack)


class Appender(_Edge):
    """Appends leaves to a stored tree in a batch, with no read per leaf.

    ``Appender()`` starts from the empty tree; ``Appender.at(size, read)`` reads a stored
    tree's right edge once. Each :meth:`append` then gives the hashes to store for the new
    leaf (those :func:`hashes_to_store` gives), and :meth:`root` the root so far.
    """

    __slots__ = ()

    @classmethod
    def at(cls, size: int, read: Reader) -> Appender:
        """An appender for a stored tree of ``size`` leaves: reads its right edge (at most
        log2(size) + 1 hashes, in one call; none for the empty tree)."""
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        appender = cls()
        ranges = _edge(size)
        wanted: list[int] = []
        for lo, hi in ranges:
            _range_indexes(lo, hi, wanted)
        if wanted:
            appender._stack = list(_read(read, wanted))
        appender._size = size
        return appender

    def append(self, leaf: bytes) -> list[bytes]:
        """Add the leaf with hash ``leaf``; the hashes to store for it, in order (they go at
        ``stored_count(size)`` onwards, ``size`` taken before the call)."""
        _check_leaf(leaf)
        stack = self._stack
        out = [leaf]
        acc = leaf
        n = self._size
        while n & 1:
            acc = _sha256(_NODE + stack.pop() + acc).digest()
            out.append(acc)
            n >>= 1
        stack.append(acc)
        self._size += 1
        return out


class RootBuilder(_Edge):
    """The root of a tree fed leaf hashes one by one, in O(log n) memory.

    Each :meth:`add` costs one node hash amortised; :meth:`root` can be asked at any point
    (O(log n), the builder goes on). For speed the leaf hashes are not checked: give it
    32-byte hashes (:func:`leaf_hash`).
    """

    __slots__ = ()

    def add(self, leaf: bytes) -> None:
        """Append the leaf whose hash is ``leaf``."""
        stack = self._stack
        acc = leaf
        n = self._size
        while n & 1:
            acc = _sha256(_NODE + stack.pop() + acc).digest()
            n >>= 1
        stack.append(acc)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaf hashes (the same as :meth:`add` for each, with less overhead)."""
        stack = self._stack
        push, pop = stack.append, stack.pop
        sha, node = _sha256, _NODE
        size = self._size
        for acc in leaves:
            n = size
            while n & 1:
                acc = sha(node + pop() + acc).digest()
                n >>= 1
            push(acc)
            size += 1
        self._size = size


# -- reading: roots and proofs --------------------------------------------------------------


def tree_hash(size: int, read: Reader) -> bytes:
    """The root of the stored tree of ``size`` leaves (:data:`EMPTY_ROOT` for 0), folded from
    its right edge (one read of at most log2(size) + 1 hashes)."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return _fold(_read_ranges(_edge(size), read))


def inclusion_proof(index: int, size: int, read: Reader) -> list[bytes]:
    """The RFC 6962 audit path PATH(index, D[size]) proving leaf ``index`` is in the tree of
    ``size`` leaves: the leaf's sibling first, the root's child last.

    Walked from the root down, each step keeps the side holding the leaf and takes the hash
    of the other side; the hashes needed are read in one call.
    """
    if index < 0 or size < 0:
        raise ValueError(f"no inclusion proof for leaf {index} of {size}: both must be >= 0")
    if index >= size:
        raise ValueError(f"no inclusion proof for leaf {index}: the tree has {size} leaves")
    lo, hi = 0, size
    others: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            others.append((lo + k, hi))
            hi = lo + k
        else:
            others.append((lo, lo + k))
            lo += k
    others.reverse()
    return _read_ranges(others, read)


def consistency_proof(old: int, size: int, read: Reader) -> list[bytes]:
    """The RFC 6962 consistency proof PROOF(old, D[size]) that the tree of ``old`` leaves is
    a prefix of the tree of ``size`` leaves (SUBPROOF of section 2.1.2, in its order).

    Empty when ``old`` is 0 or ``size`` (nothing to prove). Walked from the root down: while
    the old tree is not a whole subtree, take the hash of the side it does not reach (or of
    the complete left side it covers); the subtree it ends on comes first, unless it is the
    whole old tree (the verifier has that root).
    """
    if old < 0 or size < 0:
        raise ValueError(f"no consistency proof from {old} to {size}: both must be >= 0")
    if old > size:
        raise ValueError(f"no consistency proof from {old} leaves to fewer ({size})")
    if old == 0 or old == size:
        return []
    lo, hi, m = 0, size, old  # m: how many of the leaves [lo, hi) the old tree holds
    whole_old = True  # whether [lo, lo + m) is still the whole old tree
    others: list[tuple[int, int]] = []
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            others.append((lo + k, hi))
            hi = lo + k
        else:
            others.append((lo, lo + k))
            lo += k
            m -= k
            whole_old = False
    others.reverse()
    if not whole_old:
        others.insert(0, (lo, hi))
    return _read_ranges(others, read)


# -- verification ---------------------------------------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` proves the leaf hash ``leaf`` is leaf ``index`` of the tree of
    ``size`` leaves whose root is ``root`` (RFC 9162 section 2.1.3.2); ProofError if not.

    Refused: an index not below the size (so any index of the empty tree), a proof of the
    wrong length for the position, any hash not 32 bytes, a root that does not match.
    """
    if index < 0 or size < 0 or index >= size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    _check_hash("the leaf hash", leaf)
    _check_hash("the root", root)
    fn, sn = index, size - 1
    acc = leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError(f"a proof hash is {len(p)} bytes, not {HASH_SIZE}")
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            acc = _sha256(_NODE + p + acc).digest()
            # Past the right edge's levels where the node has no right sibling.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            acc = _sha256(_NODE + acc + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is too short")
    if acc != root:
        raise ProofError("the proof does not lead to the root")


def verify_consistency(
    old: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that ``proof`` proves the tree of ``old`` leaves with root ``old_root`` is a
    prefix of the tree of ``size`` leaves with root ``root`` (RFC 9162 section 2.1.4.2);
    ProofError if not.

    Conventions (those of the Go tlog and transparency-dev verifiers where they apply):
    ``old == size`` needs an empty proof and equal roots. ``old == 0`` (any size) needs an
    empty proof: every tree extends the empty one, so there is nothing to prove about
    ``root``; ``old_root`` must still be the empty tree's root (:data:`EMPTY_ROOT`), the only
    root a tree of 0 leaves has. (Go's tlog refuses ``old == 0`` outright; transparency-dev
    accepts it with an empty proof, whatever the roots.) ``old > size``, a negative size,
    any hash not 32 bytes, or a proof of the wrong length are refused.
    """
    if old < 0 or size < 0 or old > size:
        raise ProofError(f"no consistency from {old} leaves to {size}")
    _check_hash("the old root", old_root)
    _check_hash("the root", root)
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError(f"a proof hash is {len(p)} bytes, not {HASH_SIZE}")
    if old == size:
        if proof:
            raise ProofError("a proof between trees of the same size must be empty")
        if old_root != root:
            raise ProofError("the roots of trees of the same size differ")
        return
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("the old root is not the empty tree's root")
        return
    if not proof:
        raise ProofError("the proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # the old tree is a whole subtree: its root starts the walk
        path.insert(0, old_root)
    fn, sn = old - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE + c + fr).digest()
            sr = _sha256(_NODE + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is too short")
    if fr != old_root:
        raise ProofError("the proof does not lead to the old root")
    if sr != root:
        raise ProofError("the proof does not lead to the root")
