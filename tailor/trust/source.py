"""Where one source image's signatures come from: the lookaside storage registries.d
names (simple signing), and the source repository's ``sha256-HEX.sig`` tags where
registries.d says ``use-sigstore-attachments: true`` for it. One evaluator per copy."""

from __future__ import annotations

from tailor.reference import Reference
from tailor.registry import Repository
from tailor.trust.evaluate import Evaluator
from tailor.trust.lookaside import RegistriesD, http_get, read_signatures
from tailor.trust.policy import Policy
from tailor.trust.sigstore import Attachment, read_attachments

__all__ = ["evaluator_for"]


def evaluator_for(policy: Policy, storage: RegistriesD, source: Repository) -> Evaluator:
    """The policy's evaluator for images read from ``source``."""

    def signatures(image: Reference, digest: str) -> list[bytes]:
        return read_signatures(storage, image, digest, http_get)

    def attachments(image: Reference, digest: str) -> list[Attachment]:
        return read_attachments(source, digest) if storage.use_attachments(image) else []

    return Evaluator(policy, signatures, attachments)
