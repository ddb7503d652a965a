"""What a leaf of the log is: the exact bytes of one event. Pure.

An event's leaf is the canonical JSON (broker/audit/canonical.py) of its hashed
fields (:data:`~broker.audit.events.HASHED`, absent values ``null``, ``detail``
``{}`` when empty), ``seq`` being its place in the log (leaf index + 1). An event
written while the log was a hash chain (before the tree) also carries ``prev``,
the previous event's chain hash: its leaf is exactly what its chain hash covered,
so the chain's hashes stay checkable and the tree covers them.

The leaf hash is RFC 6962's: SHA-256(0x00 || leaf).

The store keeps ``detail`` as its canonical JSON text, so a stored event's leaf can be
made straight from its columns (:func:`column_leaf`), without reading the detail as
JSON: what full verification does for every event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

from broker.audit.canonical import canonical
from broker.audit.events import HASHED

__all__ = ["COLUMNS", "column_leaf", "leaf_data"]

_FIELDS = frozenset(HASHED)

COLUMNS = HASHED
"""The stored columns a leaf is made of, in this order (:func:`column_leaf`)."""
if COLUMNS != (
    "seq", "at", "event", "client", "app_guid", "staging_guid", "image", "registry",
    "registry_username", "token_fp", "reason", "detail",
):  # fmt: skip
    raise ImportError("broker.audit.leaves.column_leaf must be written again for these fields")


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


def column_leaf(row: Sequence[Any]) -> bytes:
    """The leaf bytes of a stored event of the tree, from its columns (:data:`COLUMNS`
    first, in order; ``detail`` as its canonical JSON text or NULL): the bytes
    :func:`leaf_data` gives for the same event, made with one string format (the keys
    in their canonical order, the strings escaped by the C encoder, which escapes
    exactly what the canonical form does) instead of a parse and a serialisation.

    The detail text goes in as stored. For a row whose detail text is not the canonical
    form (an event stored before the store kept it so) the bytes differ from the leaf
    and do not hash to the stored hash: the caller then falls back to
    :func:`leaf_data`. Raises TypeError for a value of a type no broker stores."""
    seq, at, event, client, app, staging, image, registry, username, fp, reason, detail = row[:12]
    text = encode_basestring
    return (
        f'{{"app_guid":{"null" if app is None else text(app)}'
        f',"at":{"null" if at is None else text(at)}'
        f',"client":{"null" if client is None else text(client)}'
        f',"detail":{detail or "{}"}'
        f',"event":{"null" if event is None else text(event)}'
        f',"image":{"null" if image is None else text(image)}'
        f',"reason":{"null" if reason is None else text(reason)}'
        f',"registry":{"null" if registry is None else text(registry)}'
        f',"registry_username":{"null" if username is None else text(username)}'
        f',"seq":{seq:d}'
        f',"staging_guid":{"null" if staging is None else text(staging)}'
        f',"token_fp":{"null" if fp is None else text(fp)}}}'
    ).encode()
