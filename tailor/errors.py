"""Every error the Tailor raises, so callers can catch exactly what they handle.

    TailorError
    +-- InvalidReference        an image reference that does not parse
    +-- ConfigError             bad options, credentials file or platform
    +-- TransportError          the registry could not be reached (after retries)
    +-- AuthError               a challenge or token exchange we refuse or that failed
    +-- RegistryError           the registry answered with an error status
    |   +-- Unauthorized        401: wrong or missing credentials
    |   +-- Denied              403: authenticated, but not allowed
    |   +-- NotFound            404: no such repository, manifest or blob
    +-- ManifestError           a manifest we cannot read or do not support
    +-- ProtocolError           an answer the API does not allow (an unreadable or looping listing)
    +-- VerificationError       bytes that are not what their descriptor promised
        +-- DigestMismatch
        +-- SizeMismatch

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
        text = f"{label}: {self.what}"
        if self.details:
            parts = [f"{d.code}: {d.message}" if d.message else d.code for d in self.details[:3]]
            text += " (" + "; ".join(parts) + ")"
        return text


class Unauthorized(RegistryError):
    pass


class Denied(RegistryError):
    pass


class NotFound(RegistryError):
    pass


_LABELS = {401: "unauthorized", 403: "denied", 404: "not found"}
