"""``sigstoreSigned``: cosign-format signatures under ``sha256-HEX.sig`` in a real
Distribution registry, made here with an ECDSA P-256 key. Debian's skopeo has sigstore
verification patched out, so no peer checks these verdicts (docs/tailor.md says so);
each case is a rule of upstream containers/image's evaluation."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tailor.authn import ANONYMOUS
from tailor.errors import PolicyRefused
from tailor.reference import parse_reference
from tailor.registry import Repository
from tailor.transport import InsecureHosts, Transport
from tailor.trust.lookaside import RegistriesD, Section
from tailor.trust.policy import parse_policy
from tailor.trust.sigstore import (
    COSIGN_SIGNATURE_ARTIFACT,
    SIGNATURE_ANNOTATION,
    SIGNATURE_LAYER,
    key_fingerprint,
)
from tailor.trust.source import evaluator_for
from tests.support.images import OCI_MANIFEST, Layout, attach, image, push_raw, referrer
from tests.support.registry import Registry

ATTACHED = RegistriesD(default=Section(None, True))


@dataclass
class Signer:
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def cosign_payload(digest: str, reference: str) -> bytes:
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(doc).encode()


def push_signature(
    reg: Registry, layout: Layout, repo: str, subject: str, layers: list[tuple[bytes, str | None]]
) -> None:
    """A manifest as cosign pushes it under ``sha256-HEX.sig``: one layer a signature."""
    descs = []
    for payload, signature in layers:
        extra = {"annotations": {SIGNATURE_ANNOTATION: signature}} if signature else {}
        descs.append(layout.descriptor(SIGNATURE_LAYER, payload, **extra))
    config = layout.descriptor("application/vnd.oci.image.config.v1+json", b"{}")
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descs}
    top = layout.descriptor(OCI_MANIFEST, json.dumps(body).encode())
    push_raw(reg.url, repo, layout, top, subject.replace(":", "-", 1) + ".sig")


@pytest.fixture
def signed(public: Registry, tmp_path: Path) -> tuple[Registry, Layout, str]:
    layout = Layout(tmp_path / "layout")
    top = image(layout, seed=7, layers=1)
    push_raw(public.url, "ns/app", layout, top, "v1")
    return public, layout, top["digest"]


def policy_doc(pem: bytes, identity: dict[str, str] | None = None) -> bytes:
    req: dict[str, object] = {
        "type": "sigstoreSigned",
        "keyData": base64.b64encode(pem).decode(),
    }
    if identity:
        req["signedIdentity"] = identity
    return json.dumps({"default": [req]}).encode()


def check(reg: Registry, doc: bytes, digest: str, storage: RegistriesD = ATTACHED) -> str:
    repo = Repository(Transport(reg.host, ANONYMOUS, InsecureHosts([reg.host])), "ns/app")
    evaluator = evaluator_for(parse_policy(doc), storage, repo)
    verdict = evaluator.check(parse_reference(f"{reg.host}/ns/app:v1"), digest)
    (signer,) = verdict.signers
    return signer


def refusal(reg: Registry, doc: bytes, digest: str, storage: RegistriesD = ATTACHED) -> str:
    with pytest.raises(PolicyRefused) as info:
        check(reg, doc, digest, storage)
    assert info.value.requirement == "sigstoreSigned"
    return info.value.reason


def test_a_cosign_signature_by_the_key_is_accepted_for_its_repository(
    signed: tuple[Registry, Layout, str],
) -> None:
    reg, layout, digest = signed
    ours, other = (
        Signer(ec.generate_private_key(ec.SECP256R1())),
        Signer(ec.generate_private_key(ec.SECP256R1())),
    )
    # cosign signs the repository name only: the default identity rule needs a tag or a
    # digest in the signature, so only matchRepository (or exactRepository) accepts it.
    payload = cosign_payload(digest, f"{reg.host}/ns/app")
    push_signature(
        reg,
        layout,
        "ns/app",
        digest,
        [(payload, other.sign(payload)), (payload, ours.sign(payload))],
    )
    repository = {"type": "matchRepository"}
    fingerprint = check(reg, policy_doc(ours.pem, repository), digest)
    der = ours.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fingerprint == hashlib.sha256(der).hexdigest().upper() == key_fingerprint(ours.pem)
    why = refusal(reg, policy_doc(ours.pem), digest)
    assert f"Signature for identity {reg.host}/ns/app is not accepted" in why
    why = refusal(
        reg, policy_doc(Signer(ec.generate_private_key(ec.SECP256R1())).pem, repository), digest
    )
    assert why.startswith("None of the signatures were accepted, reasons: ")
    assert why.count("cryptographic signature verification failed") == 2
    # Where registries.d does not say use-sigstore-attachments, they are not read at all.
    unread = refusal(reg, policy_doc(ours.pem, repository), digest, RegistriesD())
    assert unread == "A signature was required, but no signature exists"


def test_a_payload_for_another_digest_or_tampered_is_refused(
    signed: tuple[Registry, Layout, str],
) -> None:
    reg, layout, digest = signed
    ours = Signer(ec.generate_private_key(ec.SECP256R1()))
    repository = {"type": "matchRepository"}
    other = "sha256:" + "0" * 64
    moved = cosign_payload(other, f"{reg.host}/ns/app")
    push_signature(reg, layout, "ns/app", digest, [(moved, ours.sign(moved))])
    assert refusal(reg, policy_doc(ours.pem, repository), digest) == (
        f"Signature for digest {other} does not match"
    )
    good = cosign_payload(digest, f"{reg.host}/ns/app")
    tampered = good.replace(b"ns/app", b"ns/apq")
    push_signature(reg, layout, "ns/app", digest, [(tampered, ours.sign(good))])
    assert refusal(reg, policy_doc(ours.pem, repository), digest) == (
        "cryptographic signature verification failed"
    )
    push_signature(reg, layout, "ns/app", digest, [(good, None)])
    assert "missing dev.cosignproject.cosign/signature" in refusal(
        reg, policy_doc(ours.pem, repository), digest
    )
    unsigned = "sha256:" + hashlib.sha256(b"no such manifest").hexdigest()
    assert refusal(reg, policy_doc(ours.pem, repository), unsigned) == (
        "A signature was required, but no signature exists"
    )


def test_a_cosign_signature_stored_as_a_referrer_is_read_too(
    signed: tuple[Registry, Layout, str],
) -> None:
    reg, layout, digest = signed
    ours = Signer(ec.generate_private_key(ec.SECP256R1()))
    repository = {"type": "matchRepository"}
    assert refusal(reg, policy_doc(ours.pem, repository), digest) == (
        "A signature was required, but no signature exists"
    )
    payload = cosign_payload(digest, f"{reg.host}/ns/app")
    subject = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(layout.blobs[digest])}
    ref = referrer(
        layout,
        subject,
        payload=payload,
        layer_type=SIGNATURE_LAYER,
        artifact_type=COSIGN_SIGNATURE_ARTIFACT,
        annotations=None,
    )
    # The signature annotation belongs on the layer: rewrite the manifest with it.
    manifest = json.loads(layout.blobs[ref["digest"]])
    manifest["layers"][0]["annotations"] = {SIGNATURE_ANNOTATION: ours.sign(payload)}
    ref = layout.descriptor(
        OCI_MANIFEST, json.dumps(manifest).encode(), artifactType=COSIGN_SIGNATURE_ARTIFACT
    )
    attach(reg.url, "ns/app", layout, ref, digest)
    assert check(reg, policy_doc(ours.pem, repository), digest) == key_fingerprint(ours.pem)
