"""The witnesses the log accepts cosignatures from: registered and removed by the
operator (``broker audit witnesses add|remove``), each change an audit event."""

from __future__ import annotations

from collections.abc import Callable

from broker.audit import events
from broker.audit.note import NoteError, Verifier
from broker.audit.witnesses import MAX_WITNESSES, witness_key
from broker.errors import Conflict, Invalid, NotFound
from broker.service.unit import Units

__all__ = ["Witnesses"]


def _key(vkey: str) -> Verifier:
    try:
        return witness_key(vkey)
    except NoteError as exc:
        raise Invalid(f"not a witness's verifier key: {exc}") from None


class Witnesses:
    def __init__(self, units: Units, clock: Callable[[], float]) -> None:
        self._units = units
        self._clock = clock

    def add(self, vkey: str) -> Verifier:
        """Register a witness by its verifier key (signature type 0x04)."""
        witness = _key(vkey)
        with self._units() as unit:
            if len(unit.tx.witness_rows()) >= MAX_WITNESSES:
                raise Conflict(f"a log registers at most {MAX_WITNESSES} witnesses")
            if not unit.tx.add_witness(witness.vkey(), witness.name, int(self._clock())):
                raise Conflict(f"witness {witness.label} is registered already")
            unit.audit(events.WITNESS_ADDED(detail={"vkey": witness.vkey()}))
        return witness

    def remove(self, vkey: str) -> Verifier:
        """Unregister a witness: its cosignatures are no longer accepted or served (they
        stay stored, and so do the checkpoints they cosigned)."""
        witness = _key(vkey)
        with self._units() as unit:
            if not unit.tx.remove_witness(witness.vkey()):
                raise NotFound(f"no witness {witness.label} is registered")
            unit.audit(events.WITNESS_REMOVED(detail={"vkey": witness.vkey()}))
        return witness
