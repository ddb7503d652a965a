"""The audit log, in one package: what events there are, how they are chained, written,
checked, read and exported.

- ``events``: the event catalog: every kind, the fields it carries, the stored record
- ``canonical``: the canonical JSON that is hashed and signed
- ``chain``: the older broker's hash chain, checked before it is adopted (pure)
- ``leaves``: an event's leaf bytes, from its fields or straight from its stored columns
- ``verify``: the events against the tree and the signed checkpoints (pure)
- ``merkle``: RFC 6962 Merkle tree math over a stored-hash layout: roots, proofs and their
  verification (pure; the transparency log's)
- ``log``: :class:`AuditLog`, the only append path (pending events, no lock), integration
  (``integrator``), proofs, verification of the stored log, pages, the export
- ``query``: filters as auditors give them
- ``export``: the offline export format and its verification
- ``witnesses``: witnesses' keys, the cosignatures they post, the K-of-N policy an auditor
  verifies with (pure; the witness itself is ``broker/audit/witness.py``)
- ``cosignatures``: :class:`Cosignatures`, the witnesses' cosignatures the log keeps:
  accepted when posted, served appended to the checkpoints, each witness's newest

The store only keeps the rows (``broker/store/sql.py``).
"""

from broker.audit import events
from broker.audit.events import CATALOG, AuditEvent, Kind, Record, timestamp
from broker.audit.log import AuditLog, AuditWriter, Verification
from broker.audit.query import FILTERS, AuditFilter, make_filter
from broker.audit.verify import Report

__all__ = [
    "CATALOG",
    "FILTERS",
    "AuditEvent",
    "AuditFilter",
    "AuditLog",
    "AuditWriter",
    "Kind",
    "Record",
    "Report",
    "Verification",
    "events",
    "make_filter",
    "timestamp",
]
