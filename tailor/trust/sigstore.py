"""``sigstoreSigned``: cosign-format signatures in the image's repository, under the tag
``sha256-HEX.sig`` (containers/image calls them sigstore attachments), or as OCI 1.1
referrers of the image with cosign's signature ``artifactType`` (what cosign writes with
``--registry-referrers-mode oci-1-1``). Each layer of such an OCI manifest whose media
type is cosign's simple-signing one is a signature: the layer
is the payload (simple-signing JSON of type ``cosign container image signature``) and
its ``dev.cosignproject.cosign/signature`` annotation is the base64 signature over the
payload's exact bytes, by the requirement's public key (PEM: ECDSA with SHA-256, RSA
PKCS #1 v1.5 with SHA-256, or Ed25519), as upstream containers/image verifies it.

Read only where registries.d says ``use-sigstore-attachments: true`` for the image, as in
containers/image. Debian's skopeo has sigstore verification patched out, so these
verdicts have no independent peer here (docs/tailor.md, "Signature policy").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tailor.errors import TailorError
from tailor.manifest import Manifest
from tailor.registry import Repository
from tailor.trust.simplesign import SignatureFormatError, SignatureRejected

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "COSIGN_SIGNATURE_ARTIFACT",
    "SIGNATURE_LAYER",
    "Attachment",
    "attachment_tag",
    "key_fingerprint",
    "read_attachments",
    "verify_attachment",
]

SIGNATURE_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
"""The ``artifactType`` of a cosign signature stored as an OCI 1.1 referrer."""
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MAX_PAYLOAD = 4 << 20
_MAX_LAYERS = 64


@dataclass(frozen=True)
class Attachment:
    media_type: str
    payload: bytes
    signature: str | None
    """The annotation as written (base64), None when absent."""


def attachment_tag(digest: str) -> str:
    return digest.replace(":", "-", 1) + ".sig"


def read_attachments(repo: Repository, digest: str) -> list[Attachment]:
    """The attachments stored for manifest ``digest``: its ``.sig`` tag's, then those of
    its cosign signature referrers (found as the copy finds referrers: tailor.referrers);
    each payload's bytes checked against its descriptor."""
    from tailor.referrers import Finder

    tag = attachment_tag(digest)
    out: list[Attachment] = []
    for ref in Finder(repo, map).find([digest]):
        if ref.subject != digest:
            continue  # a referrer of a referrer
        if ref.tag == tag:
            if ref.manifest.media_type != _OCI_MANIFEST:
                raise SignatureFormatError(
                    "unexpected MIME type for sigstore attachment manifest "
                    f"{ref.manifest.media_type}"
                )
            out += _layers(repo, ref.manifest)
        elif ref.tag is None and ref.manifest.artifact_type == COSIGN_SIGNATURE_ARTIFACT:
            out += _layers(repo, ref.manifest)
    return out


def _layers(repo: Repository, manifest: Manifest) -> list[Attachment]:
    layers = json.loads(manifest.raw).get("layers") or []
    if not isinstance(layers, list) or len(layers) > _MAX_LAYERS:
        raise SignatureFormatError(f"more than {_MAX_LAYERS} sigstore attachments")
    out = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise SignatureFormatError("a sigstore attachment's descriptor is not an object")
        media_type, blob = str(layer.get("mediaType", "")), str(layer.get("digest", ""))
        size = layer.get("size")
        if not isinstance(size, int) or not 0 <= size <= _MAX_PAYLOAD:
            raise SignatureFormatError(f"sigstore attachment {blob}: size out of bounds")
        with repo.open_blob(blob) as response:
            payload = response.raw.read(_MAX_PAYLOAD + 1, decode_content=False)
        if "sha256:" + hashlib.sha256(payload).hexdigest() != blob or len(payload) != size:
            raise SignatureFormatError(f"sigstore attachment {blob}: content does not match")
        annotations = layer.get("annotations") or {}
        given = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        signature = given if isinstance(given, str) else None
        out.append(Attachment(media_type, payload, signature))
    return out


def _public_key(data: bytes) -> PublicKeyTypes:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureRejected(f"the policy's public key does not load: {exc}") from None


def key_fingerprint(pem: bytes) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, upper-case hex: the signer the
    completion and the audit log name for a sigstore signature."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    der = _public_key(pem).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest().upper()


def verify_attachment(attachment: Attachment, pem: bytes) -> None:
    """The attachment's signature is by the key over its payload; else SignatureRejected."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if attachment.signature is None:
        raise SignatureRejected(f"missing {SIGNATURE_ANNOTATION} annotation")
    try:
        signature = base64.b64decode(attachment.signature, validate=True)
    except binascii.Error:
        raise SignatureRejected("the signature annotation is not base64") from None
    key = _public_key(pem)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, attachment.payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, attachment.payload, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, attachment.payload)
        else:
            raise SignatureRejected(f"unsupported public key type {type(key).__name__}")
    except InvalidSignature:
        raise SignatureRejected("cryptographic signature verification failed") from None
    except TailorError:
        raise
