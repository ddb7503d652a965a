"""One unit of work: a transaction, the audit events it writes, and the caller's assertion id.

Everything a request does commits together or not at all: its action, its
audit events (appended through the audit log's one path) and the spending of the
caller's assertion ``jti``. A refusal that is decided inside the unit is raised
after it commits, so the refusal is audited and the assertion stays spent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from broker.audit import AuditEvent, AuditLog, AuditWriter
from broker.auth import Authenticated
from broker.errors import Unauthenticated
from broker.store import SqlTx, Store

__all__ = ["Unit", "Units"]


class Unit:
    """The open transaction (``tx``) and its audit writer."""

    def __init__(self, tx: SqlTx, writer: AuditWriter) -> None:
        self.tx = tx
        self._writer = writer

    def audit(self, event: AuditEvent) -> None:
        self._writer.append(event)


class Units:
    """Opens units of work on one store and one audit log."""

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    @contextmanager
    def __call__(self, caller: Authenticated | None = None) -> Iterator[Unit]:
        with self._store.transaction() as tx:
            writer = self._audit.writer(tx)
            if caller is not None and not caller.spent:
                if not tx.use_assertion(caller.name, caller.jti, caller.expires_at):
                    caller.spent = True  # by the request that used it first
                    raise Unauthenticated("replayed assertion", "replayed")
            yield Unit(tx, writer)
        writer.committed()
        if caller is not None:
            caller.spent = True
