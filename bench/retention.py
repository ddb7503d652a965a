"""What a staging costs the broker's SQLite database, and what retention gives back.

N stagings go through the in-process API (mint, redeem, complete, each with its audit
events and the checkpoints they bring); then prune's mark is set on all of them and
retention forgets them (the clock moved past BROKER_STAGING_RETENTION; the sweeper has
dropped the spent assertion ids by then too). Printed: the bytes of each table and index
(SQLite's dbstat: whole pages in use) per staging, before and after: what stays is the
audit log's. Freed pages are reused by SQLite, not returned to the file system.

    python -m bench.retention [--stagings 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from broker.keys import init_keys
from broker.settings import Settings
from tests.support.brokerapp import AUD, serve
from tests.support.clients import new_clients


def table_bytes(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY name")
        return {str(name): int(size) for name, size in rows}
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stagings", type=int, default=1000)
    n = parser.parse_args().stagings
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        init_keys(keys)
        db = Path(tmp) / "broker.sqlite"
        settings = Settings(database_url=f"sqlite:///{db}", keys_dir=keys, public_url=AUD)
        with serve(settings, new_clients(), sweep=False) as api:
            empty = table_bytes(db)
            for i in range(n):
                guid = f"stg-{i:06}"
                token = api.mint(guid).json()["token"]
                assert api.redeem(token).status_code == 200
                assert api.complete(guid, "succeeded").status_code == 200
            api.service.audit.checkpoint()
            full = table_bytes(db)
            with api.store.transaction() as tx:
                guids = [s.staging_guid for s in tx.all_stagings()]
                tx.mark_repositories_gone(guids, int(time.time()))
            real = time.time
            api.service.clock = lambda: real() + settings.staging_retention + 60
            api.service.stagings.sweep()  # assertion ids past their replay window go too
            while api.service.retention.sweep():
                pass
            after = table_bytes(db)
    print(f"{n} stagings (mint, redeem, complete); bytes per staging, whole pages:")
    print(f"{'table or index':<36} {'closed':>8} {'forgotten':>10}")
    for name in sorted(full):
        grown = (full[name] - empty.get(name, 0)) / n
        left = (after[name] - empty.get(name, 0)) / n
        if grown or left:
            print(f"{name:<36} {grown:>8.0f} {left:>10.0f}")
    total = (sum(full.values()) - sum(empty.values())) / n
    left = (sum(after.values()) - sum(empty.values())) / n
    print(f"{'all':<36} {total:>8.0f} {left:>10.0f}")


if __name__ == "__main__":
    main()
