"""Every error the Tailor raises, so callers can catch exactly what they handle.

    TailorError
    +-- InvalidReference        an image reference that does not parse
    +-- ConfigError             bad options, credentials file or platform
    +-- TransportError          the registry could not be reached (after retries)
    +-- AuthError               a challenge or token exchange we refuse or that failed
    +-- RegistryError           the registry answered with an error status
    |   +-- Unauthorized        401: missing or refused credentials (says which, or none)
    |   +-- Denied              403: authenticated, but not allowed
    |   +-- NotFound            404: no such repository, manifest or blob
    +-- ManifestError           a manifest we cannot read or do not support
    +-- ProtocolError           an answer the API does not allow (an unreadable or looping listing)
    +-- VerificationError       bytes that are not what their descriptor promised
    |   +-- DigestMismatch
    |   +-- SizeMismatch
    +-- PolicyRefused           the signature policy does not accept the image

Messages are one line and never carry a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthError",
    "ConfigError",
    "Denied",
    "DigestMismatch",
    "ErrorDetail",
    "InvalidReference",
    "ManifestError",
    "NotFound",
    "PolicyRefused",
    "ProtocolError",
    "RegistryError",
    "SizeMismatch",
    "TailorError",
    "TransportError",
    "Unauthorized",
    "VerificationError",
]


class TailorError(Exception):
    """Base of all Tailor errors."""


class InvalidReference(TailorError, ValueError):
    pass


class ConfigError(TailorError):
    pass


class TransportError(TailorError):
    pass


class AuthError(TailorError):
    pass


class ManifestError(TailorError):
    pass


class ProtocolError(TailorError):
    pass


class VerificationError(TailorError):
    pass


class DigestMismatch(VerificationError):
    pass


class SizeMismatch(VerificationError):
    pass


class PolicyRefused(TailorError):
    """The signature policy does not accept the image (tailor.trust): nothing of it is
    published. ``scope`` and ``requirement`` name what refused it, ``reason`` why."""

    def __init__(self, message: str, scope: str, requirement: str, reason: str) -> None:
        super().__init__(message)
        self.scope, self.requirement, self.reason = scope, requirement, reason


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of the registry's ``{"errors": [...]}`` body."""

    code: str
    message: str


class RegistryError(TailorError):
    """The registry said no; ``codes`` are its own error codes (``MANIFEST_UNKNOWN``...)."""

    def __init__(self, status: int, what: str, details: list[ErrorDetail] | None = None) -> None:
        self.status = status
        self.what = what
        self.details = details or []
        super().__init__(self._text())

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.details]

    def _text(self) -> str:
        label = _LABELS.get(self.status, f"registry error (HTTP {self.status})")
        return f"{label}: {self.what}" + self._codes()

    def _codes(self) -> str:
        if not self.details:
            return ""
        parts = [f"{d.code}: {d.message}" if d.message else d.code for d in self.details[:3]]
        return " (" + "; ".join(parts) + ")"


class Unauthorized(RegistryError):
    """401 (or a token server's 401/403): missing or refused credentials.

    ``by`` names who refused (``registry H``, ``token server T``); empty when that is not
    known, and the message is the plain one. ``sent`` is what was presented to it: None
    for nothing (an anonymous request), else which credentials (``the basic credentials``,
    ``the platform identity tailor-1``...; never a secret). ``hint`` says where credentials
    could come from; it is said only when none were sent.
    """

    def __init__(
        self,
        status: int,
        what: str,
        details: list[ErrorDetail] | None = None,
        *,
        by: str = "",
        sent: str | None = None,
        hint: str = "",
    ) -> None:
        self.by = by
        self.sent = sent
        self.hint = hint
        super().__init__(status, what, details)

    @property
    def anonymous(self) -> bool:
        """Nothing was sent: the refusal is of anonymous access, not of credentials."""
        return bool(self.by) and self.sent is None

    def _text(self) -> str:
        if not self.by:
            return super()._text()
        label = _LABELS.get(self.status, f"registry error (HTTP {self.status})")
        if self.sent is None:
            text = (
                f"{label}: {self.by} refused anonymous access to {self.what}: "
                "no credentials were given"
            )
            return text + (f" ({self.hint})" if self.hint else "")
        text = f"{label}: {self.by} refused {self.sent} for {self.what}"
        return text + self._codes()


class Denied(RegistryError):
    pass


class NotFound(RegistryError):
    pass


_LABELS = {401: "unauthorized", 403: "denied", 404: "not found"}
