"""The OpenPGP parts of the signature policy against GnuPG itself: our reading of a
keyring's primary fingerprints equals gpg's, and ``gpgv`` (with the policy's keys only)
accepts exactly the good signatures of those keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tailor.errors import PolicyRefused
from tailor.reference import parse_reference
from tailor.trust.evaluate import Evaluator
from tailor.trust.openpgp import dearmor, primary_fingerprints
from tailor.trust.policy import parse_policy
from tailor.trust.simplesign import SignatureRejected, verify
from tests.support.signing import GnuPG, Key, gnupg

pytestmark = pytest.mark.slow  # gpg and gpgv are processes (tests/support/markers.py)

PAYLOAD = json.dumps({"say": "hello"}).encode()


@pytest.fixture(scope="module")
def gpg() -> Iterator[GnuPG]:
    with gnupg() as home:
        yield home


@pytest.fixture(scope="module")
def keys(gpg: GnuPG) -> tuple[Key, Key]:
    return gpg.generate("ours"), gpg.generate("theirs", algorithm="rsa")


def sign(gpg: GnuPG, signer: str, data: bytes = PAYLOAD, *extra: str) -> bytes:
    return gpg.gpg("--sign", "--local-user", signer, *extra, "--output", "-", stdin=data)


def test_primary_fingerprints_are_gpgs(gpg: GnuPG, keys: tuple[Key, Key]) -> None:
    ours, theirs = keys
    both = gpg.export(ours) + gpg.export(theirs)
    assert primary_fingerprints(both) == [ours.fingerprint, theirs.fingerprint]
    armoured = gpg.export(ours, armor=True) + gpg.export(theirs, armor=True)
    assert dearmor(armoured) == both
    assert primary_fingerprints(armoured) == [ours.fingerprint, theirs.fingerprint]


def test_gpgv_accepts_a_good_signature_by_a_key_of_the_keyring_only(
    gpg: GnuPG, keys: tuple[Key, Key]
) -> None:
    ours, theirs = keys
    keyring = gpg.export(ours)
    assert verify(sign(gpg, ours.fingerprint), keyring) == (ours.fingerprint, PAYLOAD)
    with pytest.raises(SignatureRejected, match="Invalid GPG signature"):
        verify(sign(gpg, theirs.fingerprint), keyring)
    # Both keys in the keyring: each signer is named by its own fingerprint.
    both = keyring + gpg.export(theirs)
    assert verify(sign(gpg, theirs.fingerprint), both)[0] == theirs.fingerprint
    # A flipped byte in the signed data, and a signature without its data, are refused.
    good = bytearray(sign(gpg, ours.fingerprint, b"x" * 64, "--compress-algo", "none"))
    at = bytes(good).index(b"x" * 64)
    good[at] ^= 1
    with pytest.raises(SignatureRejected, match="Invalid GPG signature"):
        verify(bytes(good), keyring)
    detached = gpg.gpg(
        "--detach-sign", "--local-user", ours.fingerprint, "--output", "-", stdin=PAYLOAD
    )
    with pytest.raises(SignatureRejected):
        verify(detached, keyring)


def test_a_subkeys_signature_names_the_subkey_not_the_primary(gpg: GnuPG) -> None:
    """containers/image 5.23 accepts signatures by primary keys only: the fingerprint
    gpgv gives for a subkey's signature is the subkey's, which no policy key matches."""
    primary = gpg.generate("withsub")
    # The key has no passphrase: loopback with an empty one (on stdin, never an argument)
    # keeps pinentry out of it.
    unprotected = ("--pinentry-mode", "loopback", "--passphrase-fd", "0")
    args = ("--quick-add-key", primary.fingerprint, "ed25519", "sign", "0")
    gpg.gpg(*unprotected, *args, stdin=b"\n")
    listing = gpg.gpg("--with-colons", "--list-keys", primary.fingerprint).decode()
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    assert fprs[0] == primary.fingerprint and len(fprs) == 2
    sub = fprs[1]
    keyring = gpg.export(primary)
    signer, _ = verify(sign(gpg, sub + "!"), keyring)
    assert signer == sub
    assert primary_fingerprints(keyring) == [primary.fingerprint]
    # The evaluator therefore refuses it, though the same payload signed by the primary
    # key is accepted.
    image = parse_reference("reg.test:5000/ns/app:v1")
    digest = "sha256:" + "a1" * 32
    payload = json.dumps(
        {
            "critical": {
                "type": "atomic container signature",
                "image": {"docker-manifest-digest": digest},
                "identity": {"docker-reference": str(image)},
            },
            "optional": {},
        }
    ).encode()
    policy = {
        "default": [
            {
                "type": "signedBy",
                "keyType": "GPGKeys",
                "keyData": base64.b64encode(keyring).decode(),
            }
        ]
    }

    def evaluator(signer: str) -> Evaluator:
        blob = sign(gpg, signer, payload)
        return Evaluator(parse_policy(json.dumps(policy).encode()), lambda ref, d: [blob])

    assert evaluator(primary.fingerprint + "!").check(image, digest).signers == (
        primary.fingerprint,
    )
    with pytest.raises(PolicyRefused, match=f"Signature by key {sub} is not accepted"):
        evaluator(sub + "!").check(image, digest)


def test_a_signed_message_that_expands_past_4_mib_is_refused_unwritten(
    gpg: GnuPG, keys: tuple[Key, Key]
) -> None:
    """A few KiB of compressed message can hold gigabytes: gpgv's output is read from a
    pipe and cut at 4 MiB, and nothing of it lands on disk."""
    ours, _ = keys
    bomb = sign(gpg, ours.fingerprint, b"\0" * (5 << 20), "--compress-algo", "zlib")
    assert len(bomb) < 64 << 10
    with pytest.raises(SignatureRejected, match="larger than 4 MiB"):
        verify(bomb, gpg.export(ours))


def test_only_gpgkeys_is_implemented(gpg: GnuPG, keys: tuple[Key, Key]) -> None:
    """``signedByGPGKeys`` and the X.509 types parse, and refuse at evaluation, as in
    containers/image: a good signature by the key does not make them accept."""
    ours, _ = keys
    image = parse_reference("reg.test:5000/ns/app:v1")
    digest = "sha256:" + "b2" * 32
    critical = {
        "type": "atomic container signature",
        "image": {"docker-manifest-digest": digest},
        "identity": {"docker-reference": str(image)},
    }
    blob = sign(gpg, ours.fingerprint, json.dumps({"critical": critical, "optional": {}}).encode())
    key = base64.b64encode(gpg.export(ours)).decode()
    for key_type in ("GPGKeys", "signedByGPGKeys", "X509Certificates"):
        doc = {"default": [{"type": "signedBy", "keyType": key_type, "keyData": key}]}
        evaluator = Evaluator(parse_policy(json.dumps(doc).encode()), lambda ref, d: [blob])
        if key_type == "GPGKeys":
            assert evaluator.check(image, digest).signers == (ours.fingerprint,)
        else:
            with pytest.raises(PolicyRefused, match=f'Unimplemented "keyType" value "{key_type}"'):
                evaluator.check(image, digest)
