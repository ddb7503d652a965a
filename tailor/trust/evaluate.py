"""The verdict of a policy on one image manifest, as containers/image reaches it: the
scope's requirements in order, every one must accept, the first refusal is the answer.

``signedBy`` accepts when any one of the manifest's simple-signing signatures is made by
a primary key of the requirement's keys (a subkey's signature is refused, as
containers/image 5.23 refuses it), signs exactly this manifest digest, and names a
reference ``signedIdentity`` accepts for the image. Refused signatures beside an
accepted one do not matter; with none accepted, every one's reason is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tailor.errors import ConfigError, PolicyRefused, TailorError
from tailor.reference import Reference
from tailor.trust.identity import signed_reference
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
from tailor.trust.simplesign import (
    SignatureFormatError,
    SignatureRejected,
    parse_payload,
    simple_signing_blob,
    verify,
)

__all__ = ["Evaluator", "Verdict"]

Signatures = Callable[[Reference, str], list[bytes]]
"""``(image, manifest digest) -> stored signature blobs``, in order."""


@dataclass(frozen=True)
class Verdict:
    """An accepted manifest: what decided, and who signed it."""

    manifest_digest: str
    scope: str
    requirements: tuple[str, ...]
    signers: tuple[str, ...]
    """The fingerprints of the accepted signatures' keys, one per signedBy requirement."""
    policy_digest: str


class Evaluator:
    """A policy and where the signatures are read."""

    def __init__(self, policy: Policy, signatures: Signatures) -> None:
        self.policy = policy
        self._signatures = signatures

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
        if isinstance(requirement, SigstoreSigned):
            return "sigstoreSigned is not supported by this version of the tailor"
        assert isinstance(requirement, SignedBy)
        try:
            blobs = self._signatures(image, digest)
            messages = [m for m in map(simple_signing_blob, blobs) if m is not None]
        except (SignatureFormatError, TailorError) as exc:
            return str(exc)
        if not messages:
            return "A signature was required, but no signature exists"
        reasons = []
        for message in messages:
            try:
                signers.append(self._accept(requirement, message, image, digest))
                return None
            except SignatureRejected as exc:
                reasons.append(str(exc))
        if len(reasons) == 1:
            return reasons[0]
        return "None of the signatures were accepted, reasons: " + "; ".join(reasons)

    def _accept(self, req: SignedBy, message: bytes, image: Reference, digest: str) -> str:
        """The signer's fingerprint when ``message`` supports the image; else why not."""
        if req.key_type not in {"GPGKeys", "signedByGPGKeys"}:
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
        payload = parse_payload(data)
        if payload.digest != digest:
            raise SignatureRejected(f"Signature for digest {payload.digest} does not match")
        signed = signed_reference(payload.reference)
        if signed is None or not req.identity.matches(image, signed):
            raise SignatureRejected(f"Signature for identity {payload.reference} is not accepted")
        return signer
