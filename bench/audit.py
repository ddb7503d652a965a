"""Audit benchmark: verifying a long stored chain, streamed page by page, beside the
same verification over the whole log loaded into memory first (how it was done
before), in one run: time per event and peak Python memory for each.

    python -m bench.audit [--events 200000] [--checkpoint-every 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from broker.audit import AuditLog, Checkpoint, Report, events
from broker.audit.chain import chain_event, verify_chain
from broker.keys import init_keys, load_keys
from broker.store import Store, open_store


def fill(store: Store, audit: AuditLog, count: int) -> None:
    """``count`` registry-token grants (the most frequent event), through the one append path
    (which signs a checkpoint every ``checkpoint_every``)."""
    written = 0
    while written < count:
        with store.transaction() as tx:
            writer = audit.writer(tx)
            for _ in range(min(1000, count - written)):
                written += 1
                grant = {"granted": [f"repository:staging/app-{written % 50}/s:pull"]}
                writer.append(events.REGISTRY_TOKEN(client="cell-1", detail=grant))


def measured(run: Callable[[], Report]) -> tuple[float, float, Report]:
    """Seconds (a plain run) and peak traced MiB (a second run: tracing slows it down)."""
    start = time.perf_counter()
    report = run()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak / 2**20, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        root = Path(tmp)
        init_keys(root / "keys")
        material = load_keys(root / "keys")
        keys = material.audit_public
        store = open_store(f"sqlite:///{root / 'broker.sqlite'}")
        store.migrate()
        audit = AuditLog(store, material, checkpoint_every=args.checkpoint_every)
        started = time.perf_counter()
        fill(store, audit, args.events)
        print(f"{args.events} events written in {time.perf_counter() - started:.1f} s")
        reader = AuditLog(store, None)  # as `broker audit verify` opens it

        def loaded() -> Report:
            with store.transaction(write=False) as tx:
                chain = [chain_event(r) for r in AuditLog._records(tx)]
                checkpoints = [Checkpoint.from_row(r) for r in tx.checkpoint_rows()]
            return verify_chain(chain, checkpoints, keys)

        results = {
            "streamed": measured(lambda: reader.verify(keys)),
            "loaded first": measured(loaded),
        }
        store.close()
    print(f"{'verification':>14} {'time':>8} {'us/event':>9} {'peak MiB':>9}  result")
    for name, (elapsed, peak, report) in results.items():
        per_event = 1e6 * elapsed / max(1, report.events_total)
        print(f"{name:>14} {elapsed:7.2f}s {per_event:9.1f} {peak:9.1f}  {report.summary()}")
    streamed, loaded_ = results["streamed"], results["loaded first"]
    time_ratio, memory_ratio = streamed[0] / loaded_[0], streamed[1] / loaded_[1]
    print(f"streamed/loaded: time {time_ratio:.2f}, peak memory {memory_ratio:.3f}")
    intact = all(r.intact for _, _, r in results.values())
    return 0 if intact else 1


if __name__ == "__main__":
    raise SystemExit(main())
