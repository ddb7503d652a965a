"""The verdict of a policy on one image manifest, as containers/image reaches it: the
scope's requirements in order, every one must accept, the first refusal is the answer.

``signedBy`` accepts when any one of the manifest's simple-signing signatures is made by
a primary key of the requirement's keys (a subkey's signature is refused, as
containers/image 5.23 refuses it), signs exactly this manifest digest, and names a
reference ``signedIdentity`` accepts for the image. ``sigstoreSigned`` accepts the same
way with a cosign signature by its public key (tailor.trust.sigstore). Refused signatures
beside an accepted one do not matter; with none accepted, every one's reason is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from tailor.errors import ConfigError, PolicyRefused, TailorError
from tailor.reference import Reference
from tailor.trust.identity import IdentityRule, signed_reference
from tailor.trust.openpgp import dearmor, primary_fingerprints
from tailor.trust.policy import (
    AcceptAnything,
    Policy,
    Reject,
    Requirement,
    SignedBaseLayer,
    SignedBy,
    SigstoreSigned,
)
from tailor.trust.sigstore import (
    SIGNATURE_LAYER,
    Attachment,
    key_fingerprint,
    verify_attachment,
)
from tailor.trust.simplesign import (
    COSIGN_TYPE,
    Payload,
    SignatureFormatError,
    SignatureRejected,
    parse_payload,
    simple_signing_blob,
    verify,
)

__all__ = ["Evaluator", "Verdict"]

Signatures = Callable[[Reference, str], list[bytes]]
"""``(image, manifest digest) -> stored signature blobs``, in order."""
Attachments = Callable[[Reference, str], list[Attachment]]
"""``(image, manifest digest) -> its sigstore attachments`` (none where registries.d does
not say ``use-sigstore-attachments``)."""


@dataclass(frozen=True)
class Verdict:
    """An accepted manifest: what decided, and who signed it."""

    manifest_digest: str
    scope: str
    requirements: tuple[str, ...]
    signers: tuple[str, ...]
    """The fingerprints of the accepted signatures' keys, one per signedBy or sigstoreSigned
    requirement."""
    policy_digest: str


class Evaluator:
    """A policy and where the signatures are read."""

    def __init__(
        self, policy: Policy, signatures: Signatures, attachments: Attachments | None = None
    ) -> None:
        self.policy = policy
        self._signatures = signatures
        self._attachments = attachments or (lambda image, digest: [])

    def check(self, image: Reference, digest: str) -> Verdict:
        """The verdict on manifest ``digest`` of ``image`` (the reference the user named:
        its tag, or its digest, is what ``signedIdentity`` compares); PolicyRefused."""
        if image.digest and image.tag:
            image = image.with_digest(image.digest)
        scope, requirements = self.policy.requirements_for(image)
        signers: list[str] = []
        for index, requirement in enumerate(requirements):
            why = self._refusal(requirement, image, digest, signers)
            if why is not None:
                raise PolicyRefused(
                    f"{image} ({digest}) refused by the signature policy: scope {scope}, "
                    f"requirement {index + 1} ({requirement.kind}): {why}",
                    scope,
                    requirement.kind,
                    why,
                )
        kinds = tuple(r.kind for r in requirements)
        return Verdict(digest, scope, kinds, tuple(signers), self.policy.digest)

    def _refusal(
        self, requirement: Requirement, image: Reference, digest: str, signers: list[str]
    ) -> str | None:
        if isinstance(requirement, AcceptAnything):
            return None
        if isinstance(requirement, Reject):
            return f"Running image docker://{image} is rejected by policy."
        if isinstance(requirement, SignedBaseLayer):
            return "signedBaseLayer not implemented yet!"
        candidates: list[Callable[[], str]]
        try:
            if isinstance(requirement, SigstoreSigned):
                attached = [
                    a for a in self._attachments(image, digest) if a.media_type == SIGNATURE_LAYER
                ]
                candidates = [
                    partial(self._accept_sigstore, requirement, a, image, digest) for a in attached
                ]
            else:
                assert isinstance(requirement, SignedBy)
                blobs = self._signatures(image, digest)
                messages = [m for m in map(simple_signing_blob, blobs) if m is not None]
                candidates = [
                    partial(self._accept, requirement, m, image, digest) for m in messages
                ]
        except (SignatureFormatError, TailorError) as exc:
            return str(exc)
        if not candidates:
            return "A signature was required, but no signature exists"
        reasons = []
        for accept in candidates:
            try:
                signers.append(accept())
                return None
            except SignatureRejected as exc:
                reasons.append(str(exc))
        if len(reasons) == 1:
            return reasons[0]
        return "None of the signatures were accepted, reasons: " + "; ".join(reasons)

    def _accept_sigstore(
        self, req: SigstoreSigned, attachment: Attachment, image: Reference, digest: str
    ) -> str:
        """The key's fingerprint when ``attachment`` supports the image; else why not."""
        try:
            pem = req.keys.load()
        except ConfigError as exc:
            raise SignatureRejected(str(exc)) from None
        verify_attachment(attachment, pem)
        payload = parse_payload(attachment.payload, COSIGN_TYPE)
        self._matches(req.identity, payload, image, digest)
        return key_fingerprint(pem)

    @staticmethod
    def _matches(identity: IdentityRule, payload: Payload, image: Reference, digest: str) -> None:
        if payload.digest != digest:
            raise SignatureRejected(f"Signature for digest {payload.digest} does not match")
        signed = signed_reference(payload.reference)
        if signed is None or not identity.matches(image, signed):
            raise SignatureRejected(f"Signature for identity {payload.reference} is not accepted")

    def _accept(self, req: SignedBy, message: bytes, image: Reference, digest: str) -> str:
        """The signer's fingerprint when ``message`` supports the image; else why not."""
        if req.key_type != "GPGKeys":  # the other three parse, and are not implemented
            raise SignatureRejected(f'Unimplemented "keyType" value "{req.key_type}"')
        try:
            keyring = dearmor(req.keys.load())
            trusted = primary_fingerprints(keyring)
        except ConfigError as exc:
            raise SignatureRejected(str(exc)) from None
        if not trusted:
            raise SignatureRejected("No public keys imported")
        signer, data = verify(message, keyring)
        if signer not in trusted:
            raise SignatureRejected(f"Signature by key {signer} is not accepted")
        self._matches(req.identity, parse_payload(data), image, digest)
        return signer
