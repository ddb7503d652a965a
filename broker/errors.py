"""Every error the broker raises, so callers (the API, the CLI) catch exactly what they handle.

    BrokerError                 the message is one line, safe to show, never a secret
    +-- Refusal                 refused for a ``reason`` the caller is not told (no oracle):
    |   |                       the reason goes to the audit log, logs and metrics only
    |   +-- Unauthenticated     401: the client assertion (or session) is not accepted
    |   |   +-- ClockSkew       the one reason told (``detail``): the caller's clock is off
    |   +-- TokenRefused        400: the staging token does not open, match or redeem
    +-- Forbidden               403: authenticated, but this client's role may not
    +-- Invalid                 422: well-formed, but not acceptable
    +-- NotFound                404: no such staging for this caller
    +-- Conflict                409: the staging exists already, or is closed
    +-- Unavailable             503: nothing was done (fail closed), except OutcomeUnknown
    |   +-- StoreError          the database is unreachable or refused a write
    |   |   +-- StoreFull       ... because its disk (or its size limit) is full
    |   |   +-- OutcomeUnknown  the answer to COMMIT was lost: the action may have been done
    |   +-- AuditTampered       the stored audit log is not what this broker wrote
    |   +-- Busy                every slot for this work is taken: try again shortly
    |   +-- UpstreamUnreachable the user's registry cannot be reached from the broker
    +-- SetupError              an operator's input the CLI refuses: settings, key files,
        +-- KeyFileError        exports, prune lists
        +-- ExportError
        +-- PruneRefused

The API maps each class to one problem type (``broker/api/errors.py``); the CLI
prints any ``BrokerError`` as one line and exits 1.
"""

from __future__ import annotations

__all__ = [
    "AuditTampered",
    "BrokerError",
    "Busy",
    "ClockSkew",
    "Conflict",
    "ExportError",
    "Forbidden",
    "Invalid",
    "KeyFileError",
    "NotFound",
    "OutcomeUnknown",
    "PruneRefused",
    "Refusal",
    "SetupError",
    "StoreError",
    "StoreFull",
    "TokenRefused",
    "Unauthenticated",
    "Unavailable",
    "UpstreamUnreachable",
]


class BrokerError(Exception):
    """Base of all broker errors."""


class Refusal(BrokerError):
    """A refusal whose ``reason`` is for the audit log, logs and metrics, never the caller."""

    public = "refused"

    def __init__(self, reason: str) -> None:
        super().__init__(self.public)
        self.reason = reason


class Unauthenticated(Refusal):
    """``kind`` is what a public counter may say: one of :data:`KINDS`, never caller text,
    and no finer than an attacker may learn (an unknown client and a bad signature are
    both ``rejected``). ``reason`` says more, for the log."""

    public = "client authentication failed"
    KINDS = (
        "missing",
        "malformed",
        "rejected",
        "invalid",
        "replayed",
        "clock_skew",
        "pull_credential",
    )

    def __init__(self, reason: str, kind: str = "rejected") -> None:
        assert kind in self.KINDS, kind
        super().__init__(reason)
        self.kind = kind


class ClockSkew(Unauthenticated):
    """A genuine assertion whose times are off the broker's clock by more than the skew
    allowed. Unlike other refusals its ``detail`` is told to the caller, who must fix a
    clock: it is raised only once the signature verified with the registered key of the
    client named (``broker/auth.py``), so it tells nothing to anyone without a genuine
    assertion. The detail names no client and no key, only seconds."""

    def __init__(self, how: str, skew: int) -> None:
        super().__init__(f"clock skew: {how}", "clock_skew")
        self.detail = f"clock skew: {how}; {skew} s allowed either way"


class TokenRefused(Refusal):
    public = "staging token refused"


class Forbidden(BrokerError):
    def __init__(self, message: str = "this client's role may not call this endpoint") -> None:
        super().__init__(message)


class Invalid(BrokerError):
    pass


class NotFound(BrokerError):
    pass


class Conflict(BrokerError):
    pass


class Unavailable(BrokerError):
    pass


class StoreError(Unavailable):
    pass


class StoreFull(StoreError):
    """The database's disk (or its size limit) is full: no write succeeds until space is
    freed. Reads still work."""


class OutcomeUnknown(StoreError):
    """The transaction's COMMIT was sent and its answer lost (PostgreSQL: the connection
    dropped while committing). It may have committed, with its audit events and the
    assertion's spending, or not: the caller must look before acting again. Never raised
    for a failure before COMMIT, which is rolled back (a plain ``StoreError``)."""


class AuditTampered(Unavailable):
    pass


class Busy(Unavailable):
    """Every slot for this kind of work is in use; ``retry_after`` seconds is a fair wait."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamUnreachable(Unavailable):
    """The upstream registry gave no usable answer to the broker (its message is safe to
    show: no credential)."""


class SetupError(BrokerError):
    pass


class KeyFileError(SetupError):
    pass


class ExportError(SetupError):
    pass


class PruneRefused(SetupError):
    """Pruning is refused as a whole: nothing is deleted."""
