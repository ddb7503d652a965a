"""Audit benchmark: the transparency log (broker/audit/log.py) of a million events, against
issue 15's targets: writing and integrating it, verifying it in full (time, and peak Python
memory at N and at N/10: it must not grow with the log), and serving and verifying
inclusion and consistency proofs.

    python -m bench.audit [--events 1000000] [--proofs 1000] [--store sqlite|postgresql]

SQLite in a temporary directory by default; ``--store postgresql`` uses
``$BROKER_TEST_DATABASE_URL`` in a schema of its own, dropped at the end. The log is
written to N/10 events and verified, then to N and verified again (the same store), so
the two peaks compare one log at two lengths. Time is from a plain run, memory from a
second, traced one (tracing slows it down). Exits 1 only when verification finds the
log not intact. The integrator's PostgreSQL lock is an advisory lock of the whole
database: while this integrates, a broker or a test integrating on the same database
finds it taken.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.schema import fresh_schema
from broker.audit import AuditLog, Record, Report, events
from broker.audit.checkpoints import LogIdentity
from broker.audit.leaves import leaf_data
from broker.audit.merkle import leaf_hash, tree_hash, verify_consistency, verify_inclusion
from broker.keys import init_keys, load_keys
from broker.store import Store, open_store

ORIGIN = "bench.example/audit"
VERIFY_RATE = 100_000  # events/s, full verification
MEMORY_RATIO = 1.5  # peak at N over peak at N/10: constant memory, 10 times the events
SERVE_MS = 5.0  # a proof served (p99)
CHECK_MS = 1.0  # a proof verified (median)


@contextlib.contextmanager
def opened(kind: str, tmp: Path) -> Iterator[Store | None]:
    """A fresh, migrated store (None: PostgreSQL asked for and no URL to reach it)."""
    if kind == "sqlite":
        store = open_store(f"sqlite:///{tmp / 'broker.sqlite'}")
        store.migrate()
        try:
            yield store
        finally:
            store.close()
        return
    url = os.environ.get("BROKER_TEST_DATABASE_URL")
    if not url:
        yield None
        return
    with fresh_schema(url) as (schema_url, _):
        store = open_store(schema_url)
        try:
            store.migrate()
            yield store
        finally:
            store.close()


@dataclass
class Written:
    events: int = 0
    write_s: float = 0.0
    integrate_s: float = 0.0


def grow(store: Store, audit: AuditLog, to: int, written: Written) -> None:
    """Append registry-token grants (the most frequent event) up to ``to`` events, 1000 a
    transaction through ``AuditLog.writer``, then integrate them (timing each phase)."""
    started = time.perf_counter()
    while written.events < to:
        with store.transaction() as tx:
            writer = audit.writer(tx)
            for _ in range(min(1000, to - written.events)):
                written.events += 1
                grant = {"granted": [f"repository:staging/app-{written.events % 50}/s:pull"]}
                writer.append(events.REGISTRY_TOKEN(client="cell-1", detail=grant))
        writer.committed()
    written.write_s += time.perf_counter() - started
    started = time.perf_counter()
    while (done := audit.integrate()) is None or done.size < to:
        time.sleep(0.01)  # another integrator held the lock (on PostgreSQL: database-wide)
    written.integrate_s += time.perf_counter() - started


@dataclass(frozen=True)
class Verified:
    seconds: float
    peak_mib: float
    report: Report


def verified(run: Callable[[], Report]) -> Verified:
    """Seconds (a plain run) and peak traced MiB (a second run: tracing slows it down)."""
    start = time.perf_counter()
    report = run()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return Verified(elapsed, peak / 2**20, report)


def timed_ms(run: Callable[[int], object], args: Sequence[int]) -> list[float]:
    """The time of ``run(arg)`` for each of ``args``, in milliseconds."""
    times = []
    for arg in args:
        start = time.perf_counter()
        run(arg)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98]


def target(name: str, met: bool, figure: str) -> str:
    return f"target {name}: {'met' if met else 'missed'} ({figure})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    size, small = args.events, max(1, args.events // 10)
    with (
        tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp,
        opened(args.store, Path(tmp)) as store,
    ):
        if store is None:
            print("--store postgresql: BROKER_TEST_DATABASE_URL is not set, nothing run")
            return 0
        init_keys(Path(tmp) / "keys")
        keys = load_keys(Path(tmp) / "keys")
        audit = AuditLog(store, keys, origin=ORIGIN)
        # As `broker audit verify` opens it: read only, the verifier keys brought along.
        reader = AuditLog(store, None, origin=ORIGIN)
        identity = LogIdentity(ORIGIN, keys.audit_public)
        written = Written()
        grow(store, audit, small, written)
        at_small = verified(lambda: reader.verify(identity))
        grow(store, audit, size, written)
        at_size = verified(lambda: reader.verify(identity))
        proofs = serve_and_check(store, reader, size, args.proofs)

    print(f"{args.store}, {size:,} registry-token events (written to {small:,}, then to {size:,})")
    print("write")
    for name, seconds in (
        ("append (1000 a transaction)", written.write_s),
        ("integrate", written.integrate_s),
    ):
        print(f"  {name + ':':<29} {seconds:6.1f} s, {size / seconds:9,.0f} events/s")
    print("verification (AuditLog.verify, a reader with the verifier keys)")
    print(f"  {'events':>9} {'time':>8} {'events/s':>10} {'peak MiB':>9}  result")
    for n, v in ((small, at_small), (size, at_size)):
        rate = v.report.events_total / v.seconds
        print(f"  {n:9,} {v.seconds:7.2f}s {rate:10,.0f} {v.peak_mib:9.2f}  {v.report.summary()}")
    ratio = at_size.peak_mib / at_small.peak_mib
    print(f"  peak memory at {size:,} / at {small:,}: {ratio:.2f}")
    print(f"proofs in the tree of {size:,}, {args.proofs} each (ms)")
    print(f"  {'':>12} {'serve p50':>10} {'serve p99':>10} {'verify p50':>11}")
    for name, (served, checked) in proofs.items():
        print(
            f"  {name:>12} {statistics.median(served):10.3f} {p99(served):10.3f}"
            f" {statistics.median(checked):11.4f}"
        )

    rate = at_size.report.events_total / at_size.seconds
    print(target(f"full verification of {size:,} events", rate >= VERIFY_RATE,
                 f"{rate:,.0f}/s vs {VERIFY_RATE:,}/s"))  # fmt: skip
    print(target("verification in constant memory", ratio <= MEMORY_RATIO,
                 f"peak {at_size.peak_mib:.2f} MiB at {size:,} vs {at_small.peak_mib:.2f} MiB"
                 f" at {small:,}: {ratio:.2f}, at most {MEMORY_RATIO}"))  # fmt: skip
    for name, (served, checked) in proofs.items():
        serve, check = p99(served), statistics.median(checked)
        print(target(f"{name} proof served", serve < SERVE_MS,
                     f"p99 {serve:.3f} ms vs {SERVE_MS} ms"))  # fmt: skip
        print(target(f"{name} proof verified", check < CHECK_MS,
                     f"median {check:.4f} ms vs {CHECK_MS} ms"))  # fmt: skip
    intact = at_small.report.intact and at_size.report.intact
    return 0 if intact else 1


def serve_and_check(
    store: Store, audit: AuditLog, size: int, count: int
) -> dict[str, tuple[list[float], list[float]]]:
    """For each kind of proof: the times (ms) to serve ``count`` random ones through
    ``audit`` (a read transaction each, as the API does) and to verify each."""
    rng = random.Random(15)
    indexes = [rng.randrange(size) for _ in range(count)]
    olds = [rng.randrange(1, size) for _ in range(count)]
    checkpoint = audit.latest()
    assert checkpoint is not None and checkpoint.size == size
    root = checkpoint.root
    # What a verifier brings: the leaf hash of the event (from its content) and old roots.
    with store.transaction(write=False) as tx:
        leaves = {}
        for i in indexes:
            (row,) = tx.audit_rows(after=i, limit=1)
            leaves[i] = leaf_hash(leaf_data(Record.from_row(row).body()))
        old_roots = {m: tree_hash(m, tx.tree_hashes) for m in olds}
    inclusion = {i: audit.inclusion(i, size) for i in indexes}
    consistency = {m: audit.consistency(m, size) for m in olds}
    return {
        "inclusion": (
            timed_ms(lambda i: audit.inclusion(i, size), indexes),
            timed_ms(lambda i: verify_inclusion(i, size, leaves[i], inclusion[i], root), indexes),
        ),
        "consistency": (
            timed_ms(lambda m: audit.consistency(m, size), olds),
            timed_ms(
                lambda m: verify_consistency(m, size, old_roots[m], root, consistency[m]), olds
            ),
        ),
    }


if __name__ == "__main__":
    raise SystemExit(main())
