"""Retention of closed stagings: the sweeper forgets the rows nothing needs any more.

A closed staging's row is what ``broker prune`` judges its repository by: without the
row, prune keeps the repository for good ("no staging record: not made by this broker").
So a row is forgotten only once prune has marked its repository gone for good
(``repository_gone_at``, set by ``broker prune --apply``; see ``broker.prune.Plan.gone``),
and only ``BROKER_STAGING_RETENTION`` after the staging closed. Never an open staging, nor
a closed one whose repository may still hold an image (a desired LRP runs it, it is
younger than prune's grace, prune never ran). A staging that was never redeemed is no
exception: its tailor may be granted push while it is open, redeemed or not
(``broker.registryauth.decide``), so only prune can say its repository is empty.

One bounded batch per round, one transaction with one ``stagings.forgotten`` event: safe
on every replica at once (a row one deleted, the others skip). Audit events are never
deleted; a forgotten staging's own events stay in the log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.audit import events, timestamp
from broker.service.unit import Units
from broker.settings import Settings
from broker.store import Store

__all__ = ["BATCH", "Retention", "RetentionCounts"]

BATCH = 500
"""Rows forgotten in one round at most: one short transaction, however much is due."""


@dataclass(frozen=True)
class RetentionCounts:
    closed: int
    """Closed stagings' rows in the store."""
    gone: int
    """Of them, those whose repository prune found gone."""
    due: int
    """Of those, the ones closed longer ago than the retention: forgotten by the next rounds."""


class Retention:
    def __init__(
        self, store: Store, units: Units, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._units = units
        self._settings = settings
        self._clock = clock

    @property
    def seconds(self) -> int:
        """How long a closed staging is kept (0: for ever)."""
        return self._settings.staging_retention

    def sweep(self, limit: int = BATCH) -> int:
        """Forget at most ``limit`` due rows, oldest first; how many this round forgot."""
        keep = self.seconds
        if not keep:
            return 0
        with self._units() as unit:
            forgotten = unit.tx.forget_stagings(int(self._clock()) - keep, limit)
            if forgotten:
                closed = [closed_at for _, closed_at in forgotten]
                detail = {
                    "count": len(forgotten),
                    "closed_from": timestamp(min(closed)),
                    "closed_until": timestamp(max(closed)),
                    "retention_seconds": keep,
                }
                unit.audit(events.STAGINGS_FORGOTTEN(client="broker", detail=detail))
        return len(forgotten)

    def counts(self) -> RetentionCounts:
        keep = self.seconds
        # With retention off nothing is ever due: a cut-off before every closing.
        before = int(self._clock()) - keep if keep else 0
        with self._store.transaction(write=False) as tx:
            return RetentionCounts(*tx.retention_counts(before))
