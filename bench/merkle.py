"""Merkle benchmark: the transparency log's tree math (broker/audit/merkle.py) on a tree of a
million leaves held in memory: writing its stored hashes, the streaming root, and proving
and verifying inclusion and consistency.

    python -m bench.merkle [--leaves 1000000] [--proofs 1000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence

from broker.audit.merkle import (
    HASH_SIZE,
    Appender,
    RootBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    stored_count,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)


def median_us(run: Callable[[int], object], args: Sequence[int]) -> float:
    """The median time of ``run(arg)`` over ``args``, in microseconds."""
    times = []
    for arg in args:
        start = time.perf_counter()
        run(arg)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=1000)
    args = parser.parse_args()
    size = args.leaves
    leaves = [leaf_hash(b"event %d" % i) for i in range(size)]

    started = time.perf_counter()
    store = bytearray()
    appender = Appender()
    for leaf in leaves:
        for h in appender.append(leaf):
            store += h
    elapsed = time.perf_counter() - started
    assert len(store) == HASH_SIZE * stored_count(size)
    print(f"stored hashes: {len(store) // HASH_SIZE} written by Appender in {elapsed:.2f} s")
    print(f"  {size / elapsed:,.0f} leaves/s")

    view = memoryview(store)

    def read(indexes: Sequence[int]) -> list[bytes]:
        return [bytes(view[i * HASH_SIZE : (i + 1) * HASH_SIZE]) for i in indexes]

    root = tree_hash(size, read)
    assert root == appender.root()

    builder = RootBuilder()
    add = builder.add
    started = time.perf_counter()
    for leaf in leaves:
        add(leaf)
    one_by_one = time.perf_counter() - started
    bulk = RootBuilder()
    started = time.perf_counter()
    bulk.extend(leaves)
    extended = time.perf_counter() - started
    assert builder.root() == bulk.root() == root
    print(f"RootBuilder over {size} leaf hashes:")
    print(f"  add():    {one_by_one:.2f} s, {size / one_by_one:,.0f} leaves/s")
    print(f"  extend(): {extended:.2f} s, {size / extended:,.0f} leaves/s")

    rng = random.Random(15)
    indexes = [rng.randrange(size) for _ in range(args.proofs)]
    olds = [rng.randrange(1, size) for _ in range(args.proofs)]
    inclusion = {i: inclusion_proof(i, size, read) for i in indexes}
    consistency = {m: consistency_proof(m, size, read) for m in olds}
    old_roots = {m: tree_hash(m, read) for m in olds}
    lengths = [len(p) for p in inclusion.values()], [len(p) for p in consistency.values()]

    print(f"proofs in the {size}-leaf tree, median of {args.proofs}:")
    figures = {
        "inclusion proof": median_us(lambda i: inclusion_proof(i, size, read), indexes),
        "inclusion verify": median_us(
            lambda i: verify_inclusion(i, size, leaves[i], inclusion[i], root), indexes
        ),
        "consistency proof": median_us(lambda m: consistency_proof(m, size, read), olds),
        "consistency verify": median_us(
            lambda m: verify_consistency(m, size, old_roots[m], root, consistency[m]), olds
        ),
        "tree hash": median_us(lambda m: tree_hash(m, read), olds),
    }
    for name, us in figures.items():
        print(f"  {name:>18}: {us:7.1f} us")
    print(
        f"  proof hashes: inclusion {min(lengths[0])}-{max(lengths[0])},"
        f" consistency {min(lengths[1])}-{max(lengths[1])}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
