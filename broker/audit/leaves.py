"""What a leaf of the log is: the exact bytes of one event. Pure.

An event's leaf is the canonical JSON (broker/audit/canonical.py) of its hashed
fields (:data:`~broker.audit.events.HASHED`, absent values ``null``, ``detail``
``{}`` when empty), ``seq`` being its place in the log (leaf index + 1). An event
written while the log was a hash chain (before the tree) also carries ``prev``,
the previous event's chain hash: its leaf is exactly what its chain hash covered,
so the chain's hashes stay checkable and the tree covers them.

The leaf hash is RFC 6962's: SHA-256(0x00 || leaf).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.audit.canonical import canonical
from broker.audit.events import HASHED

__all__ = ["leaf_data"]

_FIELDS = frozenset(HASHED)


def leaf_data(body: Mapping[str, Any], prev: str | None = None) -> bytes:
    """The leaf bytes of the event ``body`` (its hashed fields, ``seq`` included)."""
    if type(body) is dict and body.keys() == _FIELDS:
        # The hashed fields and nothing else (as the log's reader gives them): the same
        # record (key order aside, which the canonical form sorts), copied faster.
        record = body.copy()
    else:
        record = {name: body.get(name) for name in HASHED}
    record["detail"] = record["detail"] or {}
    if prev is not None:
        record["prev"] = prev
    return canonical(record)
